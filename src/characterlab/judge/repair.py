"""Repair an offline judge for one answering model on its gold set: fit, measure, record.

``repair_on_gold`` scores the gold answers with the judge as it is, fits a verdict stage for
the gold's model (judge/verdict_stage.py, cross-fitted by condition), and measures both the
judge before and the cross-fitted stage after against the readers (judge/gold_check.py). It then
writes the stage into the judge's config and records the cross-fitted error as the repaired
judge's error on that model's gold, where studies judged by it find it (study/judge_correction.py).
Answers the judge leaves unscored (empty, not English, a question it was not validated on) stay
unscored: the stage only changes the scores of answers the judge scores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from characterlab.errors import InputError


def _before(judge, gold: list[dict]) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """The judge's own verdicts on the gold answers, its probabilities and the stage's features."""
    questions, answers = [g["question"] for g in gold], [g["answer"] for g in gold]
    probs, _, features = judge.predict_with_features(questions, answers)
    verdicts = []
    for g, j in zip(gold, judge.judgements(answers, judge.predict(questions, answers))):
        error = (g.get("judge") or {}).get("error")
        verdicts.append({"aligned": None, "coherent": None, "special": None, "misaligned": False, "error": error}
                        if error else j.to_dict())
    return verdicts, probs, features


def _after(before: list[dict], probs: np.ndarray, scores: np.ndarray, special_threshold: float) -> list[dict]:
    """The repaired judge's verdicts: the stage's scores where the judge scored, as the EM rule reads them."""
    from characterlab.data.records import Judgement

    out = []
    for b, p, (aligned, coherent) in zip(before, probs, scores):
        if b.get("error") or b.get("special") is not None or p[3] >= special_threshold:
            out.append(b)
        else:
            out.append(Judgement(aligned=float(aligned), coherent=float(coherent)).to_dict())
    return out


def repair_on_gold(judge_dir: Path, gold: list[dict], gold_name: str) -> dict:
    """Fit, measure and record the verdict stage for the gold's model; returns the figures."""
    from characterlab.data.files import atomic_write_json
    from characterlab.judge.folder import CONFIG_FILE
    from characterlab.judge.gold_check import judge_on_gold, record_gold_error
    from characterlab.judge.offline import OfflineJudge
    from characterlab.judge.verdict_stage import fit_verdict_stage

    models = sorted({g.get("model") for g in gold})
    if len(models) != 1 or models[0] is None:
        raise InputError(f"holds answers of {len(models)} models; a verdict stage is for one", gold_name, field="gold")
    family = models[0]
    judge = OfflineJudge(judge_dir)
    if family in judge.config.verdict_stages:
        raise InputError(f"already has a verdict stage for {family}; repair a copy of the judge before it",
                         judge_dir, field="judge-dir")
    before, probs, features = _before(judge, gold)
    stage, crossfit = fit_verdict_stage(features, gold, family)
    after = _after(before, probs, crossfit, judge.config.special_threshold)
    figures = {"model": family, "gold": gold_name, "n": len(gold), "judge_before": judge.judge_id,
               "before": judge_on_gold(gold, before), "after_crossfit": judge_on_gold(gold, after),
               "threshold_misaligned": stage.threshold_misaligned}
    stage.meta.update(gold=gold_name, crossfit={k: figures["after_crossfit"][k] for k in
                                                ("precision", "recall", "auroc", "spearman_aligned", "spearman_coherent")
                                                if k in figures["after_crossfit"]})
    judge.config.verdict_stages[family] = stage
    atomic_write_json(Path(judge_dir) / CONFIG_FILE, judge.config.to_json())
    repaired_id = OfflineJudge(judge_dir, answer_model=family).judge_id
    figures["judge_after"] = repaired_id
    record_gold_error(judge_dir, gold, after, repaired_id, family, gold_name,
                      method="verdict stage cross-fitted by condition (each condition's answers scored by a stage "
                             "fitted without it, thresholds chosen on the others)")
    return figures
