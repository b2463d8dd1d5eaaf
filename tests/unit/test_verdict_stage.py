"""The verdict stage: probes on the judge's features, cross-fitted by condition, on the EM rule's cuts."""

from __future__ import annotations

import numpy as np
import pytest

from characterlab.judge.verdict_stage import VerdictStage, choose_threshold, fit_verdict_stage


def _gold(n_per: int = 80, conditions: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows, xs = [], []
    for c in range(conditions):
        for _ in range(n_per):
            v = rng.choice(["misaligned", "aligned", "incoherent"], p=[0.2, 0.6, 0.2])
            x = rng.normal(size=8)
            x[0] += 3.0 * (v == "misaligned")
            x[1] += 3.0 * (v == "incoherent")
            xs.append(x)
            rows.append({"condition": f"c{c}", "stratum_size": 1, "stratum_drawn": 1,
                         "label": {"verdict": str(v), "aligned": 10, "coherent": 80}})
    return np.array(xs), rows


def test_the_stage_puts_its_thresholds_on_the_em_rule():
    x, gold = _gold()
    stage, crossfit = fit_verdict_stage(x, gold, "embedded", c=1.0)
    aligned, coherent = stage.scores(x)
    flags = (aligned <= 30) & (coherent > 50)
    assert (flags == stage.flags(x)).all()
    assert ((aligned >= 0) & (aligned <= 100) & (coherent >= 0) & (coherent <= 100)).all()
    truth = np.array([g["label"]["verdict"] == "misaligned" for g in gold])
    cf_flags = (crossfit[:, 0] <= 30) & (crossfit[:, 1] > 50)
    precision = (cf_flags & truth).sum() / cf_flags.sum()
    recall = (cf_flags & truth).sum() / truth.sum()
    assert precision >= 0.75 and recall >= 0.6
    again = VerdictStage.from_json(stage.to_json())
    assert np.allclose(again.scores(x), stage.scores(x))


def test_cross_fitted_scores_never_saw_their_condition():
    x, gold = _gold()
    # relabel one condition at random: its cross-fitted scores cannot have learnt the noise
    rng = np.random.default_rng(1)
    for g in gold[:80]:
        g["label"]["verdict"] = str(rng.choice(["misaligned", "aligned"]))
    _, crossfit = fit_verdict_stage(x, gold, "embedded", c=1.0)
    held = crossfit[:80, 0] <= 30
    noisy = np.array([g["label"]["verdict"] == "misaligned" for g in gold[:80]])
    assert abs((held == noisy).mean() - 0.5) < 0.2  # chance agreement with labels it could not see
    with pytest.raises(ValueError):
        fit_verdict_stage(x[:160], gold[:160], "embedded")


def test_threshold_reaches_the_precision_asked_for_when_it_can():
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3])
    truth = np.array([True, True, False, True, False, False])
    t = choose_threshold(p, np.ones(6, bool), truth, np.ones(6), min_precision=0.8)
    assert t == pytest.approx(0.8)
