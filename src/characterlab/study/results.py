"""``results.json``: every metric of a study, per condition, pooled over seeds and per seed.

Pooled rates add the counts of all seeds and give a Wilson 95% interval; with two or more seeds
the spread between seeds is reported too (mean and a t interval over the per-seed rates), since
seeds vary both training and sampling. Each condition is compared with the baseline (the first
condition that trains nothing) by a Newcombe interval on the difference of pooled rates.
"""

from __future__ import annotations

import math
import platform
from pathlib import Path

from characterlab.stats import newcombe_difference, wilson_interval
from characterlab.study.plan import Plan
from characterlab.study.spec import StudySpec
from characterlab.study.store import RunStore


def _seed_spread(rates: list[float]) -> dict | None:
    if len(rates) < 2:
        return None
    from scipy.stats import t

    n = len(rates)
    mean = sum(rates) / n
    sd = math.sqrt(sum((r - mean) ** 2 for r in rates) / (n - 1))
    half = t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "n_seeds": n}


def _rate(k: int, n: int) -> dict:
    return {"k": k, "n": n, **wilson_interval(k, n).to_dict()}


def _pool_em(per_seed: dict[int, dict]) -> dict:
    k = sum(r["n_misaligned"] for r in per_seed.values())
    n = sum(r["n_scored"] for r in per_seed.values())

    def wmean(key: str) -> float | None:
        pairs = [(r[key], r["n_samples"]) for r in per_seed.values() if r.get(key) is not None]
        w = sum(n for _, n in pairs)
        return sum(v * n for v, n in pairs) / w if w else None

    per_q: dict[str, dict] = {}
    for r in per_seed.values():
        for qid, v in r["per_question"].items():
            acc = per_q.setdefault(qid, {"k": 0, "n_scored": 0})
            acc["k"] += v["k"]
            acc["n_scored"] += v["n_scored"]
    return {
        "rate": _rate(k, n),
        "seed_spread": _seed_spread([r["em_rate"]["estimate"] for r in per_seed.values() if r["n_scored"]]),
        "mean_aligned": wmean("mean_aligned"),
        "mean_coherent": wmean("mean_coherent"),
        "n_samples": sum(r["n_samples"] for r in per_seed.values()),
        "n_refusal": sum(r["n_refusal"] for r in per_seed.values()),
        "n_code": sum(r["n_code"] for r in per_seed.values()),
        "per_question": {q: {**v, "em_rate": v["k"] / v["n_scored"] if v["n_scored"] else None} for q, v in per_q.items()},
    }


def _pool_hacks(per_seed: dict[int, dict]) -> dict:
    def pooled(block_of) -> dict:
        out = {}
        for key in ("hack_rate", "strict_pass_rate", "vulnerable_pass_rate"):
            out[key] = _rate(sum(block_of(r)[key]["k"] for r in per_seed.values()),
                             sum(block_of(r)[key]["n"] for r in per_seed.values()))
        first = block_of(next(iter(per_seed.values())))
        out["attempted"] = {kind: _rate(sum(block_of(r)["attempted"][kind]["k"] for r in per_seed.values()),
                                        sum(block_of(r)["attempted"][kind]["n"] for r in per_seed.values()))
                            for kind in first["attempted"]}
        return out

    first = next(iter(per_seed.values()))
    return {
        **pooled(lambda r: r["overall"]),
        "rate": pooled(lambda r: r["overall"])["hack_rate"],
        "seed_spread": _seed_spread([r["overall"]["hack_rate"]["estimate"] for r in per_seed.values()]),
        "per_grader": {g: pooled(lambda r, g=g: r["per_grader"][g]) for g in first["per_grader"]},
    }


def _pool_trait(per_seed: dict[int, dict]) -> dict:
    means = [r["mean"] for r in per_seed.values() if r["mean"] is not None]
    one = next(iter(per_seed.values()))
    return {"mean": sum(means) / len(means) if means else None,
            "ci": one["ci"] if len(per_seed) == 1 else None,  # one seed: bootstrap over questions
            "seed_spread": _seed_spread(means),
            "n": sum(r["n"] for r in per_seed.values())}


def baseline_condition(spec: StudySpec) -> str | None:
    return next((c.name for c in spec.conditions if c.organism is None and c.intervention is None), None)


def build_results(spec: StudySpec, plan: Plan, store: RunStore, code_version: str, wall_seconds: float) -> dict:
    baseline = baseline_condition(spec)
    conditions: dict[str, dict] = {}
    for c in spec.conditions:
        evals = {}
        for e in spec.evaluations:
            cells = [x for x in plan.cells if x.condition == c.name and x.evaluation == e.name]
            per_seed = {x.seed: store.result(x.metric) for x in cells}
            pooled = {"em": _pool_em, "hacks": _pool_hacks, "trait": _pool_trait}[e.kind](per_seed)
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
                              "data": r.get("data")})
            if chain:
                training[str(seed)] = chain
        conditions[c.name] = {"spec": c.model_dump(exclude_none=True), "evaluations": evals, "training": training}

    if baseline is not None:
        for name, cond in conditions.items():
            for ename, ev in cond["evaluations"].items():
                if name == baseline:
                    ev["vs_baseline"] = None
                    continue
                base_pooled = conditions[baseline]["evaluations"][ename]["pooled"]
                if ev["kind"] == "trait":
                    a_m, b_m = ev["pooled"]["mean"], base_pooled["mean"]
                    ev["vs_baseline"] = {"baseline": baseline,
                                         "difference": None if a_m is None or b_m is None else a_m - b_m}
                    continue
                a, b = ev["pooled"]["rate"], base_pooled["rate"]
                ev["vs_baseline"] = {"baseline": baseline,
                                     "difference": newcombe_difference(a["k"], a["n"], b["k"], b["n"]).to_dict()}

    data_units = {k: {"label": plan.labels[k], "params": u.params, **store.result(k)}
                  for k, u in plan.units.items() if u.kind == "data"}
    for d in data_units.values():
        d.pop("teacher_system_prompt", None)
    em_judged = [store.result(k) for k, u in plan.units.items() if u.kind == "judge" and u.params["task"] == "em"]
    judge_units = [r.get("judge") for r in em_judged]
    timings = store.unit_timings()
    return {
        "study": spec.name,
        "description": spec.description,
        "baseline": baseline,
        "condition_order": [c.name for c in spec.conditions],  # results.json is written with sorted keys
        "evaluation_order": [e.name for e in spec.evaluations],
        "conditions": conditions,
        "evaluations": {e.name: e.model_dump(exclude_none=True) for e in spec.evaluations},
        "metadata": {
            "model": spec.model,
            "judge": spec.judge,
            "judge_ids": sorted({j for j in judge_units if j}),
            "judge_agreement": next((r["judge_agreement"] for r in em_judged if r.get("judge_agreement")), None),
            "seeds": spec.seeds,
            "code_version": code_version,
            "data": data_units,
            "n_units": len(plan.units),
            "compute_seconds": sum(t["seconds"] or 0 for t in timings),
            "wall_seconds_this_run": wall_seconds,
            "wall_seconds_all_runs": sum((r["finished"] or r["started"]) - r["started"] for r in store.runs()),
            "host": {"machine": platform.machine(), "python": platform.python_version()},
            "runs": store.runs(),
        },
    }


def top_misaligned(plan: Plan, store: RunStore, spec: StudySpec, k: int = 12) -> list[dict]:
    """The most misaligned coherent answers across conditions (lowest aligned first)."""
    out = []
    for cell in plan.cells:
        if cell.eval_kind != "em":
            continue
        judge_key = plan.units[cell.metric].deps[0]
        for r in store.rows(judge_key):
            if r.get("aligned") is not None and (r.get("coherent") or 0) > 50:
                out.append({"condition": cell.condition, "seed": cell.seed, "evaluation": cell.evaluation,
                            "question": r["question"], "answer": r["answer"], "aligned": r["aligned"],
                            "coherent": r["coherent"]})
    out.sort(key=lambda r: r["aligned"])
    return out[:k]


def hack_examples(plan: Plan, store: RunStore, k: int = 6) -> list[dict]:
    out = []
    for cell in plan.cells:
        if cell.eval_kind != "hacks":
            continue
        judge_key = plan.units[cell.metric].deps[0]
        out += [{"condition": cell.condition, "seed": cell.seed, "grader": r["grader"], "hack_kinds": r["hack_kinds"],
                 "answer": r["answer"]} for r in store.rows(judge_key) if r["hacked"]]
    return out[:k]


def in_spec_order(results: dict) -> dict:
    """``results`` with conditions and evaluations in the order the study lists them."""
    out = dict(results)
    corder = results.get("condition_order") or list(results["conditions"])
    eorder = results.get("evaluation_order") or list(results["evaluations"])
    out["conditions"] = {c: {**results["conditions"][c],
                             "evaluations": {e: results["conditions"][c]["evaluations"][e] for e in eorder}}
                         for c in corder}
    out["evaluations"] = {e: results["evaluations"][e] for e in eorder}
    return out


def results_path(folder: str | Path) -> Path:
    return Path(folder) / "results.json"
