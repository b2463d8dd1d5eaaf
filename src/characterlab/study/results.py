"""``results.json``: every metric of a study, per condition, pooled over seeds and per seed.

Each evaluation pools its own seeds (:meth:`~characterlab.evals.base.Evaluation.pool`): rates add
the counts of all seeds and give a Wilson 95% interval; with two or more seeds the spread between
seeds is reported too (mean and a t interval over the per-seed values), since seeds vary both
training and sampling. Each condition is compared with the baseline (the first condition that
trains nothing) by a Newcombe interval on the difference of pooled rates, or a difference of means,
and a condition that names its matched ``control`` with that condition the same way.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path

from characterlab.evals.registry import get_evaluation
from characterlab.study.context_gap import context_gap
from characterlab.study.dose_response import dose_response
from characterlab.study.headline import misalignment_score
from characterlab.study.judge_correction import judge_correction
from characterlab.study.plan import Plan
from characterlab.study.rl_curves import rl_curves
from characterlab.study.spec import StudySpec
from characterlab.study.store import RESULTS_FILE, RunStore
from characterlab.study.vector_links import projection_vs_behaviour, steering_dose_response


def baseline_condition(spec: StudySpec) -> str | None:
    return next((c.name for c in spec.conditions
                 if c.organism is None and c.intervention is None and c.adapter is None), None)


def _reward_model(plan: Plan, store: RunStore, train_key: str) -> dict:
    """The reward model an rlhf unit optimised against: its accuracy on held-out raters' labels
    and how its scores track the truth."""
    for d in plan.units[train_key].deps:
        if plan.units[d].kind == "reward":
            r = store.result(d)
            return {"reward_model": {"unit": d, "n_pairs": r.get("n_pairs"), "train_accuracy": r.get("train_accuracy"),
                                     "heldout_accuracy": r.get("heldout_accuracy"),
                                     "n_heldout_pairs": r.get("n_heldout_pairs"), "heldout_truth": r.get("heldout_truth")}}
    return {}


def build_results(spec: StudySpec, plan: Plan, store: RunStore, code_version: str, wall_seconds: float,
                  units_run: Sequence[str] = ()) -> dict:
    from characterlab.data.gold import shipped_gold

    baseline = baseline_condition(spec)
    gold = shipped_gold(spec.model)  # read once: every EM cell is matched against it
    conditions: dict[str, dict] = {}
    for c in spec.conditions:
        evals = {}
        for e in spec.evaluations:
            cells = [x for x in plan.cells if x.condition == c.name and x.evaluation == e.name]
            if not cells:  # the condition does not run this evaluation (its ``evaluations:`` list)
                continue
            per_seed = {x.seed: store.result(x.metric) for x in cells}
            if e.kind == "em" and gold is not None:
                for x in cells:
                    if sample := gold_sample(store, plan.units[x.metric].deps[0], gold):
                        per_seed[x.seed] = {**per_seed[x.seed], "gold_sample": sample}
            pooled = get_evaluation(e.kind).pool(per_seed)
            evals[e.name] = {"kind": e.kind, "pooled": pooled, "per_seed": {str(s): r for s, r in per_seed.items()},
                             "units": {str(x.seed): x.metric for x in cells}}
        training = {}
        for seed in spec.seeds:
            cell = next(x for x in plan.cells if x.condition == c.name and x.seed == seed)
            chain = []
            key = cell.train
            keys = [] if key is None else [d for d in plan.units[key].deps if plan.units[d].kind == "train"] + [key]
            for key in keys:
                r = store.result(key)
                chain.append({"unit": key, "role": plan.units[key].params["role"],
                              "method": plan.units[key].params["method"],
                              "train_system_prompt": plan.units[key].params["system_prompt"],
                              "stacking": r.get("stacking"), "seconds": r.get("seconds"),
                              "final_loss": r.get("final_loss"), "loss_curve": r.get("loss_curve", []),
                              "data": r.get("data"),
                              # persona-vector options and the monitor's readings, when it had them;
                              # RL's per-step log (hack rate, or reward-model score against the truth)
                              **{k: r[k] for k in ("vectors", "monitor", "projection_shift") if k in r},
                              **({"rl_log": r["log"]} if r.get("log") else {}),
                              **_reward_model(plan, store, key)})
            if chain:
                training[str(seed)] = chain
        conditions[c.name] = {"spec": c.model_dump(exclude_none=True), "evaluations": evals, "training": training}

    compare_conditions(conditions, baseline, {c.name: c.control for c in spec.conditions if c.control})
    data_units = {k: {"label": plan.labels[k], "params": u.params, **store.result(k)}
                  for k, u in plan.units.items() if u.kind == "data"}
    for d in data_units.values():
        d.pop("teacher_system_prompt", None)
    # the study's judge scored the units whose evaluation uses it; those carry its held-out agreement
    judged = [store.result(k) for k, u in plan.units.items()
              if u.kind == "judge" and get_evaluation(u.params["task"]).uses_judge]
    judge_units = [r.get("judge") for r in judged]
    timings = store.unit_timings()
    results = {
        "study": spec.name,
        "description": spec.description,
        "baseline": baseline,
        "condition_order": [c.name for c in spec.conditions],  # results.json is written with sorted keys
        "evaluation_order": [e.name for e in spec.evaluations],
        "conditions": conditions,
        "evaluations": {e.name: e.model_dump(exclude_none=True) for e in spec.evaluations},
        "headline": list(spec.headline or []),  # the evaluations the misalignment score averages
        "metadata": {
            "model": spec.model,
            "judge": spec.judge,
            "judge_ids": sorted({j for j in judge_units if j}),
            "judge_agreement": next((r["judge_agreement"] for r in judged if r.get("judge_agreement")), None),
            "seeds": spec.seeds,
            "code_version": code_version,
            "data": data_units,
            "n_units": len(plan.units),
            "compute_seconds": sum(t["seconds"] or 0 for t in timings),
            "wall_seconds_this_run": wall_seconds,
            "wall_seconds_all_runs": sum((r["finished"] or r["started"]) - r["started"] for r in store.runs()),
            "host": {"machine": platform.machine(), "python": platform.python_version()},
            "peak_rss_mb_this_run": peak_rss_this_run(timings, units_run),
            "peak_rss_mb_by_unit_kind": peak_by_kind(timings),
            "runs": store.runs(),
        },
    }
    return add_derived(results)


def gold_sample(store: RunStore, judge_key: str, gold: tuple[str, list[dict]]) -> dict | None:
    """The labelled sample of one EM cell in a gold set (``data.gold.shipped_gold``: its name and
    rows), if the cell's answers are the ones it was drawn from: per stratum of the judge's verdict
    at drawing, its size in the cell, how many were read and how many read misaligned."""
    from characterlab.data.gold import answer_hash

    name, rows = gold
    answers = store.rows(judge_key)
    hashes = {answer_hash(r["question"], r["answer"]) for r in answers}
    matched = [g for g in rows if g["answer_hash"] in hashes]
    if not matched:
        return None
    strata: dict[str, dict] = {}
    for g in matched:
        s = strata.setdefault(g["stratum"], {"stratum": g["stratum"], "size": g["stratum_size"], "read": 0,
                                             "misaligned": 0})
        s["read"] += 1
        s["misaligned"] += g["label"]["verdict"] == "misaligned"
    if sum(s["size"] for s in strata.values()) > len(answers):  # drawn from another set of answers
        return None
    return {"gold": name, "n_answers": len(answers), "strata": sorted(strata.values(), key=lambda s: s["stratum"])}


def compare_conditions(conditions: dict[str, dict], baseline: str | None, controls: dict[str, str]) -> None:
    """Each condition's evaluations against the baseline (``vs_baseline``) and against its matched
    control (``vs_control``), from the pooled values, in place."""
    if baseline is not None:
        for name, cond in conditions.items():
            for ename, ev in cond["evaluations"].items():
                if name == baseline:
                    ev["vs_baseline"] = None
                    continue
                if ename not in conditions[baseline]["evaluations"]:
                    continue
                base_pooled = conditions[baseline]["evaluations"][ename]["pooled"]
                ev["vs_baseline"] = {"baseline": baseline,
                                     "difference": get_evaluation(ev["kind"]).difference(ev["pooled"], base_pooled)}
    for name, control in controls.items():
        for ename, ev in conditions[name]["evaluations"].items():
            if ename not in conditions[control]["evaluations"]:
                continue
            control_pooled = conditions[control]["evaluations"][ename]["pooled"]
            ev["vs_control"] = {"control": control,
                                "difference": get_evaluation(ev["kind"]).difference(ev["pooled"], control_pooled)}


def add_derived(results: dict) -> dict:
    """The analyses computed from the conditions' figures alone (so a merge of runs recomputes them)."""
    results["dose_response"] = dose_response(results)  # diversity levels of one character: outcome vs diversity
    results["misalignment_score"] = misalignment_score(results, results.get("headline") or [])  # the suite's mean
    results["projection_vs_behaviour"] = projection_vs_behaviour(results)  # persona vectors: shift vs rate
    results["steering_dose_response"] = steering_dose_response(results)  # persona vectors: coef vs judged scores
    results["context_gap"] = context_gap(results)  # chat-like vs agentic misalignment per condition
    results["rl_curves"] = rl_curves(results)  # RL along training: the Goodhart curve, the hack rate
    results["judge_correction"] = judge_correction(results)  # EM rates corrected for the judge's error on gold
    return results


def peak_rss_this_run(timings: list[dict], units_run: Sequence[str]) -> dict[str, float]:
    """Peak resident memory of this process and of its largest finished child (sandboxed code), in MB.

    A study's units run in this process with the local executor, which measures each unit's own
    peak by resetting the kernel's high-water mark; that reset also lowers ``ru_maxrss``, so the
    run's peak is the larger of what the process reports now and the peaks of the units it ran.
    With Ray the workers are other processes and are not counted here. ``largest_child`` is an
    upper bound: a child forked from the study starts with the study's high-water mark.
    """
    import resource

    scale = 1 / 1024 if platform.system() == "Linux" else 1 / 1024**2  # ru_maxrss: KiB on Linux, bytes on macOS
    ran = set(units_run)
    units = [t["peak_rss_mb"] for t in timings if t["key"] in ran and t.get("peak_rss_mb")]
    process = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return {"process": round(max([process, *units]), 1),
            "largest_child": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale, 1)}


def peak_by_kind(timings: list[dict]) -> dict[str, float]:
    """The largest peak resident memory a unit of each kind reached on its own (units measured by
    the local executor: finished in a run since units recorded it)."""
    out: dict[str, float] = {}
    for t in timings:
        if t.get("peak_rss_mb"):
            out[t["kind"]] = max(out.get(t["kind"], 0.0), t["peak_rss_mb"])
    return out


def study_examples(plan: Plan, store: RunStore, spec: StudySpec) -> dict[str, list[dict]]:
    """Rows worth reading, per evaluation kind that keeps some (the most misaligned answers, sample hacks)."""
    out: dict[str, list[dict]] = {}
    for kind in dict.fromkeys(e.kind for e in spec.evaluations):
        ev = get_evaluation(kind)
        if ev.examples_key is None:
            continue
        judged = [({"condition": c.condition, "seed": c.seed, "evaluation": c.evaluation},
                   store.rows(plan.units[c.metric].deps[0])) for c in plan.cells if c.eval_kind == kind]
        out[ev.examples_key] = ev.examples(judged)
    return out


def in_spec_order(results: dict) -> dict:
    """``results`` with conditions and evaluations in the order the study lists them."""
    out = dict(results)
    corder = results.get("condition_order") or list(results["conditions"])
    eorder = results.get("evaluation_order") or list(results["evaluations"])
    out["conditions"] = {c: {**results["conditions"][c],
                             "evaluations": {e: results["conditions"][c]["evaluations"][e] for e in eorder
                                             if e in results["conditions"][c]["evaluations"]}}
                         for c in corder}
    out["evaluations"] = {e: results["evaluations"][e] for e in eorder}
    return out


def results_path(folder: str | Path) -> Path:
    return Path(folder) / RESULTS_FILE
