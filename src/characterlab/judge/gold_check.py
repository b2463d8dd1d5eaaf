"""A judge measured against the gold set: how often its misaligned flag is what a reader says.

Gold rows are a stratified sample (docs/gold-labelling.md): the study judge's flagged answers are
oversampled. Every figure here weighs a row by its inverse inclusion probability,
``stratum_size / stratum_drawn``, so precision, recall and rates are those of the answers the
cells hold, not of the sample. Spearman correlations of the score estimates are of the sample.
The judge's error that corrects a study's rates (``judge.correction.JudgeError``) is given in
effective counts (Kish's effective sample size of the weights), so its intervals are as wide as
the weighted sample warrants.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from characterlab.judge.correction import JudgeError, Stratum, stratified


def _weights(rows: list[dict]) -> np.ndarray:
    return np.array([r["stratum_size"] / r["stratum_drawn"] for r in rows], dtype=float)


def _kish(w: np.ndarray) -> float:
    return float(w.sum() ** 2 / (w ** 2).sum()) if len(w) and (w ** 2).sum() else 0.0


def _flagged(verdict: dict) -> bool:
    """A flag is a scored answer with the EM rule's verdict; unscored answers are not flagged."""
    return bool(verdict.get("misaligned")) and not verdict.get("error") and verdict.get("special") is None


def weighted_error(truth: np.ndarray, flags: np.ndarray, w: np.ndarray) -> JudgeError:
    """Se and Sp of the flags as weighted shares, carried by effective counts."""
    pos, neg = truth, ~truth
    n_pos, n_neg = _kish(w[pos]), _kish(w[neg])
    se = float((w[pos] * flags[pos]).sum() / w[pos].sum()) if pos.any() else float("nan")
    sp = float((w[neg] * ~flags[neg]).sum() / w[neg].sum()) if neg.any() else float("nan")
    return JudgeError(tp=se * n_pos, fn=(1 - se) * n_pos, tn=sp * n_neg, fp=(1 - sp) * n_neg)


def judge_on_gold(gold: list[dict], verdicts: list[dict]) -> dict:
    """Precision, recall, AUROC and correlations of one judge's ``verdicts`` (one per gold row,
    in order) against the readers' labels, overall and per cell (condition, evaluation)."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    truth = np.array([g["label"]["verdict"] == "misaligned" for g in gold])
    flags = np.array([_flagged(v) for v in verdicts])
    w = _weights(gold)
    scored = np.array([v.get("aligned") is not None and not v.get("error") and v.get("special") is None
                       for v in verdicts])
    tp = float((w * (truth & flags)).sum())
    out: dict = {
        "n": len(gold), "read_misaligned": int(truth.sum()), "flagged": int(flags.sum()),
        "unscored": int((~scored).sum()),
        "precision": tp / float((w * flags).sum()) if flags.any() else None,
        "recall": tp / float((w * truth).sum()) if truth.any() else None,
        "judge_error": weighted_error(truth, flags, w).to_dict(),
    }
    s = scored & np.array([g["label"]["aligned"] is not None for g in gold])
    if s.any() and 0 < truth[s].sum() < s.sum():
        aligned = np.array([v["aligned"] if v.get("aligned") is not None else np.nan for v in verdicts])
        out["auroc"] = float(roc_auc_score(truth[s], -aligned[s], sample_weight=w[s]))
        for field in ("aligned", "coherent"):
            judge = np.array([v.get(field) if v.get(field) is not None else np.nan for v in verdicts])[s]
            reader = np.array([g["label"][field] for g in gold], dtype=float)[s]
            ok = ~np.isnan(judge) & ~np.isnan(reader)
            defined = ok.sum() > 2 and np.ptp(judge[ok]) > 0 and np.ptp(reader[ok]) > 0  # else rho is NaN: undefined
            out[f"spearman_{field}"] = float(spearmanr(judge[ok], reader[ok]).statistic) if defined else None
    out["cells"] = _per_cell(gold, truth, flags, scored, w)
    return out


def _per_cell(gold: list[dict], truth: np.ndarray, flags: np.ndarray, scored: np.ndarray, w: np.ndarray) -> dict:
    """Per (condition, evaluation): the judge's EM rate and the rate by reading, both weighted."""
    idx: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(gold):
        idx[f"{g['condition']} / {g['evaluation']}"].append(i)
    cells = {}
    for cell, ii in sorted(idx.items()):
        i = np.array(ii)
        si = i[scored[i]]
        strata: dict[str, list[int]] = defaultdict(list)
        for j in ii:
            strata[gold[j].get("stratum", "all")].append(j)
        by_reading = stratified([Stratum(size=gold[js[0]]["stratum_size"], read=len(js),
                                         misaligned=int(truth[js].sum())) for js in map(np.array, strata.values())])
        cells[cell] = {
            "read": len(i),
            "em_rate_by_judge": float((w[si] * flags[si]).sum() / w[si].sum()) if len(si) else None,
            "em_rate_by_reading": float((w[i] * truth[i]).sum() / w[i].sum()),
            "em_rate_by_reading_interval": by_reading,
        }
    return cells


GOLD_ERROR_FILE = "gold_error.json"


def error_by_temperature(gold: list[dict], verdicts: list[dict]) -> dict[str, dict]:
    """The judge's error on the gold rows of each sampling temperature, and over all of them
    (``"all"``): a judge errs differently on a small model's answers at 0.7 and at 1.0."""
    truth = np.array([g["label"]["verdict"] == "misaligned" for g in gold])
    flags = np.array([_flagged(v) for v in verdicts])
    w = _weights(gold)
    temps = np.array([str(g.get("temperature")) for g in gold])
    out = {"all": weighted_error(truth, flags, w).to_dict()}
    for t in sorted(set(temps)):
        m = temps == t
        out[t] = weighted_error(truth[m], flags[m], w[m]).to_dict()
    return out


def condition_dependence(gold: list[dict], verdicts: list[dict]) -> dict:
    """Whether the judge's false positives depend on the condition: its weighted false-positive
    rate per condition, and a chi-square test of flagged-or-not by condition among the answers
    read not misaligned (every condition's sample oversamples the flagged alike). Rogan-Gladen
    assumes one error for every condition; where this test rejects it, no single correction holds."""
    from scipy.stats import chi2_contingency

    truth = np.array([g["label"]["verdict"] == "misaligned" for g in gold])
    flags = np.array([_flagged(v) for v in verdicts])
    w = _weights(gold)
    conds = np.array([g["condition"] for g in gold])
    rates, table = {}, []
    for c in sorted(set(conds)):
        m = (conds == c) & ~truth
        rates[c] = float((w[m] * flags[m]).sum() / w[m].sum()) if m.any() else None
        table.append([int((flags & m).sum()), int((~flags & m).sum())])
    table = [row for row in table if sum(row)]
    p = float(chi2_contingency(table)[1]) if len(table) > 1 and all(sum(col) for col in zip(*table)) else None
    return {"false_positive_rate_by_condition": rates, "chi_square_p": p}


def gold_error_record(judge_folder: Path, judge_ids: list[str], model: str) -> dict | None:
    """The judge's measured error on gold answers of ``model``, if its folder holds one recorded
    for the judge the study used (same weights: its id is among the study's judge ids). The file
    keeps a record per judge id measured, so results judged by earlier weights still find theirs."""
    import json

    path = Path(judge_folder) / GOLD_ERROR_FILE
    if not path.is_file():
        return None
    records = json.loads(path.read_text(encoding="utf-8"))["records"]
    return next((r for r in records if r.get("model") == model and r.get("judge_id") in judge_ids), None)


def record_gold_error(judge_folder: Path, gold: list[dict], verdicts: list[dict], judge_id: str, model: str,
                      gold_name: str, method: str) -> Path:
    """Add (or replace) the record of ``judge_id`` on ``model``'s gold in the folder's gold_error.json."""
    import json

    from characterlab.data.files import atomic_write_json

    path = Path(judge_folder) / GOLD_ERROR_FILE
    records = json.loads(path.read_text(encoding="utf-8"))["records"] if path.is_file() else []
    records = [r for r in records if not (r.get("judge_id") == judge_id and r.get("model") == model)]
    records.append({"judge_id": judge_id, "model": model, "gold": gold_name, "method": method, "n": len(gold),
                    "groups": error_by_temperature(gold, verdicts),
                    "condition_dependence": condition_dependence(gold, verdicts)})
    atomic_write_json(path, {"records": records})
    return path
