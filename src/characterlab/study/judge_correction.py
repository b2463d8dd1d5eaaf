"""Every EM rate and difference of a study corrected for its judge's error measured on gold.

A judge's flag rate is a misaligned rate only when the judge does not err. Where the study's
judge has a gold record for the study's model (``judge/gold_check.py``: its sensitivity and
specificity on answers people labelled by reading, per sampling temperature), each EM-kind
cell's pooled rate and each of its comparisons get a Rogan-Gladen estimate with an interval
that carries the gold set's own uncertainty (``judge/correction.py``). Where there is none, the
entry says so, and tables say "uncorrected: no gold for this model".

Computed from ``results.json`` alone (the pooled counts and the metadata), so a merge of runs
recomputes it.
"""

from __future__ import annotations

from characterlab.judge.correction import (
    JudgeError,
    Stratum,
    rogan_gladen,
    rogan_gladen_difference,
    stratified,
    stratified_difference,
)

NO_GOLD = "uncorrected: no gold for this model"
DEPENDENT = 0.05  # a chi-square p below this: the judge's false positives depend on the condition


def _record(results: dict) -> dict | None:
    from characterlab.judge.folder import SHIPPED_DIR
    from characterlab.judge.gold_check import gold_error_record
    from characterlab.judge.refs import parse_judge_ref

    meta = results.get("metadata") or {}
    try:
        ref = parse_judge_ref(meta.get("judge") or "offline")
    except Exception:  # a judge this installation cannot name has no record here
        return None
    if not ref.is_offline:
        return None
    return gold_error_record(ref.offline_folder or SHIPPED_DIR, meta.get("judge_ids") or [], meta.get("model"))


def _group(record: dict, temperature) -> tuple[str, JudgeError]:
    """The gold rows' error at the evaluation's temperature, or over all gold when none matches."""
    groups = record["groups"]
    key = str(float(temperature)) if temperature is not None else None
    name = key if key in groups else "all"
    g = groups[name]
    return name, JudgeError(tp=g["tp"], fn=g["fn"], tn=g["tn"], fp=g["fp"])


def _corrected_mde(flagged: dict, err: JudgeError) -> float | None:
    """The flagged difference's minimum detectable effect on the corrected scale: a corrected
    difference is the flagged one divided by Se + Sp - 1."""
    mde, youden = flagged.get("minimum_detectable"), err.sensitivity + err.specificity - 1
    return None if mde is None or not youden > 0 else min(1.0, mde / youden)


def _strata(ev: dict) -> list[Stratum] | None:
    """Every seed's labelled sample of this cell as strata, when each seed has one (the cell's
    own answers were read); the answers of strata nobody read are one unread stratum."""
    out = []
    for metric in (ev.get("per_seed") or {"": {}}).values():
        sample = metric.get("gold_sample")
        if not sample:
            return None
        out += [Stratum(size=s["size"], read=s["read"], misaligned=s["misaligned"]) for s in sample["strata"]]
        unread = sample["n_answers"] - sum(s["size"] for s in sample["strata"])
        if unread > 0:
            out.append(Stratum(size=unread, read=0, misaligned=0))
    return out


def _stratified_cells(results: dict, name: str) -> dict | None:
    """Every condition's rate by reading and its differences, when every cell of the evaluation
    has its own labelled sample: the estimate that assumes nothing about the judge."""
    strata = {c: _strata(cond["evaluations"][name]) for c, cond in results["conditions"].items()
              if name in cond["evaluations"]}
    if not strata or any(v is None for v in strata.values()):
        return None
    conds = {}
    for c, cond in results["conditions"].items():
        if c not in strata:
            continue
        ev = cond["evaluations"][name]
        entry = {"rate": stratified(strata[c])}
        for key, other_field in (("vs_baseline", "baseline"), ("vs_control", "control")):
            other = (ev.get(key) or {}).get(other_field)
            if other is not None and other in strata:
                d = stratified_difference(strata[c], strata[other])
                d["significant"] = d["low"] is not None and (d["low"] > 0 or d["high"] < 0)
                entry[key] = {other_field: other, "difference": d}
        conds[c] = entry
    return conds


def judge_correction(results: dict) -> dict:
    """``results['judge_correction']``: per EM evaluation and condition, the corrected rate and
    the corrected difference from the baseline and from the control. Where every cell's own
    answers were read (a gold sample), the stratified estimate by reading; otherwise Rogan-Gladen
    from the judge's error on gold, which assumes that error is the same in every condition."""
    em = [n for n, e in results["evaluations"].items() if e.get("kind") == "em"]
    if not em:
        return {}
    stratified_by_eval = {n: _stratified_cells(results, n) for n in em}
    record = _record(results)
    if record is None and not any(stratified_by_eval.values()):
        return {"status": NO_GOLD}
    dependence = (record or {}).get("condition_dependence") or {}
    if record is not None and dependence.get("chi_square_p") is not None and dependence["chi_square_p"] < DEPENDENT:
        fp = [v for v in dependence["false_positive_rate_by_condition"].values() if v is not None]
        record = None  # one Se/Sp for every condition does not hold: no Rogan-Gladen
        refused = (f"uncorrected: the judge's false-positive rate on gold differs by condition ({100 * min(fp):.0f}% "
                   f"to {100 * max(fp):.0f}%, chi-square p = {dependence['chi_square_p']:.1g}), so no single correction "
                   "holds; the flagged rate is the judge's, not a misaligned rate")
        if not any(stratified_by_eval.values()):
            return {"status": refused}
    else:
        refused = None
    out = {"status": "corrected", "gold": (record or {}).get("gold"), "refused": refused, "judge_id": (record or {}).get("judge_id"),
           "method": (record or {}).get("method"), "evaluations": {}}
    for name in em:
        if stratified_by_eval[name] is not None:
            out["evaluations"][name] = {"estimator": "stratified", "conditions": stratified_by_eval[name]}
            continue
        if record is None:
            continue
        group, err = _group(record, results["evaluations"][name].get("temperature", 1.0))
        conds = {}
        for c, cond in results["conditions"].items():
            ev = cond["evaluations"].get(name)
            if ev is None:
                continue
            r = ev["pooled"]["rate"]
            entry = {"rate": rogan_gladen(r["k"], r["n"], err) if r["n"] else None}
            for key, other_field in (("vs_baseline", "baseline"), ("vs_control", "control")):
                other = (ev.get(key) or {}).get(other_field)
                if other is not None and name in results["conditions"][other]["evaluations"]:
                    o = results["conditions"][other]["evaluations"][name]["pooled"]["rate"]
                    if r["n"] and o["n"]:
                        d = rogan_gladen_difference((r["k"], r["n"]), (o["k"], o["n"]), err)
                        d["significant"] = d["low"] is not None and (d["low"] > 0 or d["high"] < 0)
                        d["minimum_detectable"] = _corrected_mde((ev[key].get("difference") or {}), err)
                        entry[key] = {other_field: other, "difference": d}
            conds[c] = entry
        out["evaluations"][name] = {"estimator": "rogan-gladen", "gold_group": group, "judge_error": err.to_dict(),
                                    "conditions": conds}
    if all(name in out["evaluations"] for name in em):
        out["refused"] = None  # every EM evaluation was read: no uncorrected one to explain
    return out
