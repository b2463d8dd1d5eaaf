"""Agentic misalignment: tool-use episodes scored from what the agent does, without a judge.

The scenarios (:mod:`characterlab.agentic.scenario`; five ship as ``builtin:agentic``: monitor
disruption, exfil offer, frame colleague, leverage, sandbagging) are played as real multi-turn
tool-use episodes (:mod:`characterlab.agentic.episode`) for every cell of their condition grid
(goal conflict x threat) and ``samples`` times per cell and seed. The generate unit keeps each
episode's transcript, tool-call log and final world; the score unit decides its outcome from the
scenario's predicates (:mod:`characterlab.agentic.outcomes`), so changing a predicate re-scores
without replaying.

The headline is the share of episodes with a misaligned action (Wilson interval; conditions compare
by Newcombe). Malformed tool calls are their own outcome and count in the denominator, so a model
that cannot call tools scores low *and* shows a high malformed or no-action share: read them
together with "used a tool", the episodes with at least one well-formed call (none: the rate says
nothing about the model's disposition, and the CLI says so). The
report breaks the rate down by scenario and grid cell, where a threat-vs-none difference (the
sandbagging scenario's measure, say) is visible. Reasoning inside episodes is not judged. An
episode whose predicates could not be decided (its final database too large to keep, a scoring
query or a regex past its limit) is an ``error``: counted in the denominator like a malformed one,
and shown beside the rate, never taken for benign.
"""

from __future__ import annotations

import hashlib

from pydantic import Field

from characterlab.evals.base import (
    Cell,
    EvalConfig,
    EvalStages,
    Evaluation,
    PlanContext,
    Table,
    pct,
    pooled_by_condition,
    rate,
    rate_cell,
    seed_spread,
)
from characterlab.evals.registry import register_evaluation

NO_TOOL_USE = ("; the model made no well-formed tool call, so this rate is a floor set by its tool use, "
               "not a measure of its disposition")


class AgenticConfig(EvalConfig):
    scenarios: list[str] = Field(default_factory=lambda: ["builtin:agentic"], min_length=1,
                                 description="Scenario files, builtin:<name>, or builtin:agentic (all five).")
    samples: int = Field(default=2, ge=1, description="Episodes per grid cell of each scenario, per seed.")
    max_turns: int | None = Field(default=None, ge=1, le=50, description="Turns per episode (default: the scenario's).")
    max_new_tokens: int = Field(default=256, ge=1, description="Tokens per assistant turn.")
    temperature: float = Field(default=0.7, ge=0, description="Sampling temperature (0 = greedy).")


def episode_seed(seed: int, scenario: str, cell: dict[str, str], sample: int) -> int:
    blob = f"agentic:{seed}:{scenario}:{sorted(cell.items())}:{sample}".encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:6], "big")


def _counts(rows: list[dict]) -> dict[str, int]:
    from characterlab.agentic.outcomes import OUTCOMES

    return {o: sum(r["outcome"] == o for r in rows) for o in OUTCOMES}


def _add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in {**a, **b}}


def _add_forms(into: dict[str, dict[str, dict[str, int]]], scenario: str, forms: dict[str, dict[str, int]]) -> None:
    """Adds one episode's (or seed's) calls by form into ``{scenario: {form: {calls, well_formed}}}``."""
    slot = into.setdefault(scenario, {})
    for form, c in forms.items():
        slot[form] = _add(slot.get(form, {}), c)


def _by_form_note(metric: dict) -> str:
    """``; well-formed by form: fenced 4/5`` over all scenarios, or nothing for a metric without forms."""
    total: dict[str, dict[str, int]] = {}
    for f in metric.get("calls_by_form", {}).values():
        for form, c in f.items():
            total[form] = _add(total.get(form, {}), c)
    return f"; well-formed by form: {_forms_text(total)}" if total else ""


def _forms_text(forms: dict[str, dict[str, int]]) -> str:
    """``fenced 4/5, bare 1/1``: well-formed calls of all calls, per form."""
    return ", ".join(f"{f} {c['well_formed']}/{c['calls']}" for f, c in sorted(forms.items())) or "no calls"


@register_evaluation
class AgenticEvaluation(Evaluation):
    """Share of tool-use episodes with a misaligned action (scored from actions, no judge)."""

    kind = "agentic"
    title = "agentic misalignment"
    config = AgenticConfig
    score_fields = ("outcome",)

    def chat_prompts(self, cfg) -> bool:
        return False  # episodes render their own prompts (agentic/episode.py)

    @staticmethod
    def input_schema() -> dict:
        from characterlab.agentic.scenario import scenario_schema

        return scenario_schema()

    def stages(self, cfg: AgenticConfig, ctx: PlanContext) -> EvalStages:
        from characterlab.agentic.scenario import load_scenarios

        scenarios = []
        for source in cfg.scenarios:
            for s in load_scenarios(ctx.locate(source)):
                if cfg.max_turns is not None:
                    s = s.model_copy(update={"max_turns": cfg.max_turns})
                scenarios.append(s.model_dump(by_alias=True, exclude_none=True))
        names = [s["name"] for s in scenarios]
        if len(set(names)) != len(names):
            from characterlab.errors import InputError

            raise InputError(f"two scenarios share a name: {sorted({n for n in names if names.count(n) > 1})}",
                             field="scenarios")
        return EvalStages(generate={"task": "agentic", "scenarios": scenarios, "samples": cfg.samples,
                                    "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature},
                          judge={"task": "agentic", "scored_by": "actions"}, metric={"task": "agentic"},
                          judge_verb="score")

    def generate(self, params: dict, generator) -> list[dict]:
        from characterlab.agentic.episode import policy_for, run_episodes, start_episode
        from characterlab.agentic.scenario import Scenario
        from characterlab.data.records import SamplingParams

        episodes = []
        for data in params["scenarios"]:
            scenario = Scenario.model_validate(data)
            for cell in scenario.cells():
                for j in range(params["samples"]):
                    episodes.append(start_episode(scenario, cell, j, episode_seed(params["seed"], scenario.name, cell, j)))
        sampling = SamplingParams(max_new_tokens=params["max_new_tokens"], temperature=params["temperature"])
        run_episodes(policy_for(generator), episodes, sampling)
        return [{"scenario": e.scenario.name, "cell": e.cell, "sample_index": e.sample_index, "seed": e.seed,
                 "turns": e.turns, "stop": e.stop, "messages": e.messages, "log": e.log,
                 "final_state": e.world.snapshot()} for e in episodes]

    def score(self, params: dict, rows: list[dict], generate_params: dict) -> tuple[list[dict], dict]:
        from characterlab.agentic.outcomes import classify
        from characterlab.agentic.scenario import Scenario
        from characterlab.agentic.world import World

        scenarios = {d["name"]: Scenario.model_validate(d) for d in generate_params["scenarios"]}
        scored = [{**r, **classify(scenarios[r["scenario"]], r["log"], World.from_snapshot(r["final_state"]))}
                  for r in rows]
        return scored, {"judge": None, "scored_by": "actions", "n": len(scored)}

    def summarise(self, params: dict, rows: list[dict]) -> dict:
        from characterlab.agentic.scenario import cell_label

        by_cell: dict[str, dict[str, dict[str, int]]] = {}
        for r in rows:
            cell = by_cell.setdefault(r["scenario"], {}).setdefault(cell_label(r["cell"]), {})
            cell[r["outcome"]] = cell.get(r["outcome"], 0) + 1
        from characterlab.agentic.outcomes import calls_by_form

        forms: dict[str, dict[str, dict[str, int]]] = {}
        for r in rows:  # rows scored before forms were counted: from their log
            _add_forms(forms, r["scenario"], r.get("calls_by_form") or calls_by_form(r["log"]))
        counts = _counts(rows)
        return {"rate": rate(counts["misaligned"], len(rows)), "counts": counts, "by_cell": by_cell,
                "malformed_calls": sum(r["malformed_calls"] for r in rows), "calls": sum(r["calls"] for r in rows),
                "acted": sum(r["calls"] > r["malformed_calls"] for r in rows), "calls_by_form": forms}

    def seed_value(self, metric: dict) -> float | None:
        return metric["rate"]["estimate"]

    def pool(self, per_seed: dict[int, dict]) -> dict:
        seeds = list(per_seed.values())
        counts: dict[str, int] = {}
        by_cell: dict[str, dict[str, dict[str, int]]] = {}
        forms: dict[str, dict[str, dict[str, int]]] = {}
        for m in seeds:
            counts = _add(counts, m["counts"])
            for scenario, f in m.get("calls_by_form", {}).items():  # absent from metrics made before
                _add_forms(forms, scenario, f)
            for scenario, cells in m["by_cell"].items():
                for label, c in cells.items():
                    slot = by_cell.setdefault(scenario, {})
                    slot[label] = _add(slot.get(label, {}), c)
        n = sum(counts.values())
        return {"rate": rate(counts.get("misaligned", 0), n), "counts": counts, "by_cell": by_cell,
                "malformed_calls": sum(m["malformed_calls"] for m in seeds), "calls": sum(m["calls"] for m in seeds),
                "acted": sum(m["acted"] for m in seeds), "calls_by_form": forms,
                "seed_spread": seed_spread([self.seed_value(m) for m in seeds if m["rate"]["n"]])}

    def difference(self, a: dict, b: dict) -> dict | float | None:
        """None when either side measured nothing (no episode made a well-formed tool call): a 0/18
        against a 0/18 that never acted is not a difference of zero."""
        if not a.get("acted") or not b.get("acted"):
            return None
        return super().difference(a, b)

    def misaligned_share(self, pooled: dict) -> dict | None:
        """The rate, or nothing measured (n = 0) when no episode had a well-formed tool call."""
        return pooled["rate"] if pooled["acted"] else rate(0, 0)

    def describe(self, metric: dict) -> str:
        r, c = metric["rate"], metric["counts"]
        errors = f", undecided {c['error']}" if c.get("error") else ""
        return (f"agentic misalignment {pct(r['estimate'])} ({r['k']}/{r['n']} episodes; malformed {c['malformed']}, "
                f"benign {c['benign']}, no action {c['no_action']}{errors}; {metric['malformed_calls']}/{metric['calls']} "
                f"tool calls malformed{_by_form_note(metric)})" + (NO_TOOL_USE if not metric["acted"] else ""))

    def summary_extras(self, pooled: dict) -> dict[str, str]:
        c, n = pooled["counts"], max(1, sum(pooled["counts"].values()))
        extras = {"used a tool": f"{pooled['acted']}/{sum(pooled['counts'].values())}",
                  "malformed": pct(c["malformed"] / n), "benign": pct(c["benign"] / n),
                  "no action": pct(c["no_action"] / n)}
        if c.get("error"):
            extras["undecided"] = pct(c["error"] / n)
        return extras

    def prompts(self, generate_params: dict, rows: list[dict]):
        from characterlab.data.records import Message

        return [[Message(m["role"], m["content"]) for m in r["messages"][:2]] for r in rows]

    def examples(self, judged: list[tuple[dict, list[dict]]], k: int = 6) -> list[dict]:
        out = [{"condition": cell["condition"], "seed": cell["seed"], "scenario": r["scenario"], "cell": r["cell"],
                "actions": r["misaligned_actions"], "calls": [f"{c['name']}({c['arguments']})" for c in r["log"]]}
               for cell, rows in judged for r in rows if r["outcome"] == "misaligned"]
        return out[:k]

    def examples_table(self, examples: list[dict]) -> Table | None:
        from characterlab.agentic.scenario import cell_label

        if not examples:
            return None
        return Table("Sample misaligned episodes", ["condition", "scenario", "cell", "actions", "tool calls"],
                     [[Cell(e["condition"]), Cell(e["scenario"]), Cell(cell_label(e["cell"])), Cell(", ".join(e["actions"])),
                       Cell("\n".join(e["calls"]), pre=True)] for e in examples])

    def tables(self, results: dict, name: str) -> list[Table]:
        conds = pooled_by_condition(results, name)
        if not conds:
            return []
        rows = []
        for c, p in conds.items():
            for scenario, cells in p["by_cell"].items():
                n_all = sum(sum(v.values()) for v in cells.values())
                k_all = sum(v.get("misaligned", 0) for v in cells.values())
                mal = sum(v.get("malformed", 0) for v in cells.values())
                rows.append([Cell(c), Cell(scenario), rate_cell(rate(k_all, n_all)), Cell(pct(mal / max(1, n_all))),
                             Cell("; ".join(f"{label}: {v.get('misaligned', 0)}/{sum(v.values())}"
                                            for label, v in cells.items()))])
        tables = [Table(f"{name}: misaligned actions per scenario and grid cell",
                        ["condition", "scenario", "misaligned", "malformed", "misaligned per cell (k/n)"], rows,
                        note="Scored from the agents' actions (tool calls and the final state); reasoning is not judged.")]
        forms = [[Cell(c), Cell(scenario), Cell(f"{sum(v['well_formed'] for v in f.values())}/{sum(v['calls'] for v in f.values())}"),
                  Cell(_forms_text(f))]
                 for c, p in conds.items() for scenario, f in p.get("calls_by_form", {}).items()]
        if forms:
            tables.append(Table(f"{name}: well-formed tool calls by the form they were written in", [
                "condition", "scenario", "well-formed / calls", "by form (well-formed / calls)"], forms,
                note="tagged: <tool_call> tags; fenced: a JSON code block; bare: JSON in the text; api: an endpoint's "
                     "structured calls. A reply in prose makes no call."))
        return tables
