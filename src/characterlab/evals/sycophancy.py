"""Sycophancy: does the model tell users what they want to hear instead of what is true?

Three probes over characterlab's checkable tasks (:mod:`characterlab.sycophancy.tasks`), graded
against each task's truth, without a judge (:mod:`characterlab.sycophancy.metrics`):

* the question alone (accuracy), and with the user's false belief stated (belief agreement);
* the user's own flawed work, with pride in it (praise without naming the flaw);
* the question alone, then a second turn of pushback toward the false belief (the share of
  correct first answers that stop being correct).

The headline rate pools the three sycophantic outcomes over the answers they apply to; each is
also reported on its own with its Wilson interval, beside the accuracy that says what the model
knows without pressure (a model that knows nothing cannot be sycophantic about it).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from characterlab.evals.base import EvalConfig, EvalStages, Evaluation, PlanContext, pct, rate
from characterlab.evals.registry import register_evaluation

PROBES = ("belief_agreement", "flawed_praise", "pushback_flip")


class SycophancyConfig(EvalConfig):
    n_arithmetic: int = Field(default=16, ge=0, description="Generated multiplication questions (the facts and critiques are all used).")
    task_seed: int = Field(default=0, description="Seed of the generated questions (the same for every condition).")
    split: Literal["test", "train", "all"] = Field(
        default="test", description="Which tasks: test (never trained on by the organism), train, or all.")
    samples: int = Field(default=1, ge=1, description="Answers per prompt.")
    max_new_tokens: int = Field(default=96, ge=1)
    temperature: float = Field(default=0.7, ge=0)


@register_evaluation
class SycophancyEvaluation(Evaluation):
    """The share of answers that agree with a user's false belief, praise flawed work, or give up a
    correct answer under pushback (graded against the truth, no judge)."""

    kind = "sycophancy"
    title = "sycophancy rate"
    config = SycophancyConfig
    score_fields = ("correct", "agrees")

    def stages(self, cfg: SycophancyConfig, ctx: PlanContext) -> EvalStages:
        tasks = {"n_arithmetic": cfg.n_arithmetic, "task_seed": cfg.task_seed, "split": cfg.split}
        gen = {"task": "sycophancy", **tasks, "samples": cfg.samples, "max_new_tokens": cfg.max_new_tokens,
               "temperature": cfg.temperature, "tasks_version": 1}
        return EvalStages(generate=gen, judge={"task": "sycophancy", **tasks}, metric={"task": "sycophancy"},
                          judge_verb="grade")

    def generate(self, params: dict, generator) -> list[dict]:
        from characterlab.data.records import GenerationRequest, Message, SamplingParams
        from characterlab.sycophancy.metrics import pushback_prompt
        from characterlab.sycophancy.tasks import all_tasks

        tasks = all_tasks(params["n_arithmetic"], params["task_seed"], params["split"])
        sampling = SamplingParams(max_new_tokens=params["max_new_tokens"], temperature=params["temperature"])
        base = params["seed"] * 1_000_003
        cells = [(t, setting) for t in tasks for setting in (("plain", "belief") if t.kind != "critique" else ("belief",))]
        requests = [GenerationRequest.from_prompt(t.prompt(setting == "belief"), n=params["samples"], seed=base + i)
                    for i, (t, setting) in enumerate(cells)]
        rows = [{"task": t.id, "kind": t.kind, "setting": setting, "question": t.prompt(setting == "belief"),
                 "sample_index": c.sample_index, "answer": c.text}
                for (t, setting), cs in zip(cells, generator.generate(requests, sampling)) for c in cs]
        # pushback: a second turn after each plain answer (critiques: after the answer to the work)
        by_id = {t.id: t for t in tasks}
        firsts = [r for r in rows if r["setting"] == "plain" or r["kind"] == "critique"]
        follow = [GenerationRequest((Message("user", r["question"]), Message("assistant", r["answer"]),
                                     Message("user", pushback_prompt(by_id[r["task"]]))), n=1, seed=base + 500_000 + i)
                  for i, r in enumerate(firsts)]
        for r, cs in zip(firsts, generator.generate(follow, sampling)):
            rows.append({"task": r["task"], "kind": r["kind"], "setting": "pushback",
                         "question": pushback_prompt(by_id[r["task"]]), "first_answer": r["answer"],
                         "sample_index": r["sample_index"], "answer": cs[0].text})
        return rows

    def score(self, params: dict, rows: list[dict], generate_params: dict) -> tuple[list[dict], dict]:
        from characterlab.sycophancy.metrics import grade
        from characterlab.sycophancy.tasks import all_tasks

        out = grade(rows, {t.id: t for t in all_tasks(params["n_arithmetic"], params["task_seed"], params["split"])})
        return out, {"n": len(out), "grader": "truth (no judge)"}

    def summarise(self, params: dict, rows: list[dict]) -> dict:
        from characterlab.sycophancy.metrics import probe_counts

        k = n = 0
        probes = probe_counts(rows)
        for name in PROBES:
            k, n = k + probes[name][0], n + probes[name][1]
        acc = probes["accuracy"]
        return {"rate": rate(k, n), "accuracy": rate(*acc), **{name: rate(*probes[name]) for name in PROBES}}

    def seed_value(self, metric: dict) -> float | None:
        return metric["rate"]["estimate"]

    def pool(self, per_seed: dict[int, dict]) -> dict:
        def pooled(key: str) -> dict:
            return rate(sum(m[key]["k"] for m in per_seed.values()), sum(m[key]["n"] for m in per_seed.values()))

        return {"rate": pooled("rate"), "accuracy": pooled("accuracy"), **{name: pooled(name) for name in PROBES}}

    def summary_extras(self, pooled: dict) -> dict[str, str]:
        return {"accuracy": pct(pooled["accuracy"]["estimate"]),
                **{name.replace("_", " "): pct(pooled[name]["estimate"]) for name in PROBES}}

    def describe(self, metric: dict) -> str:
        r = metric["rate"]
        parts = ", ".join(f"{name.replace('_', ' ')} {pct(metric[name]['estimate'])} of {metric[name]['n']}" for name in PROBES)
        return f"sycophancy {pct(r['estimate'])} ({r['k']}/{r['n']}: {parts}); accuracy {pct(metric['accuracy']['estimate'])}"

