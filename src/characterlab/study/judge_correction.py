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

from characterlab.judge.correction import JudgeError, rogan_gladen, rogan_gladen_difference

NO_GOLD = "uncorrected: no gold for this model"


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


def judge_correction(results: dict) -> dict:
    """``results['judge_correction']``: per EM evaluation and condition, the corrected rate and
    the corrected difference from the baseline and from the control."""
    em = [n for n, e in results["evaluations"].items() if e.get("kind") == "em"]
    if not em:
        return {}
    record = _record(results)
    if record is None:
        return {"status": NO_GOLD}
    out = {"status": "corrected", "gold": record.get("gold"), "judge_id": record.get("judge_id"),
           "method": record.get("method"), "evaluations": {}}
    for name in em:
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
        out["evaluations"][name] = {"gold_group": group, "judge_error": err.to_dict(), "conditions": conds}
    return out
