"""EM rates corrected for the judge's error: worked examples and the intervals' coverage."""

from __future__ import annotations

import numpy as np
import pytest

from characterlab.judge.correction import (
    JudgeError,
    Stratum,
    effective_n,
    rogan_gladen,
    rogan_gladen_difference,
    rogan_gladen_point,
    stratified,
    stratified_difference,
)


def test_rogan_gladen_worked_example():
    # 40 of 200 flagged; Se 90/100 = 0.9, Sp 190/200 = 0.95: p = (0.2 + 0.95 - 1) / 0.85
    err = JudgeError(tp=90, fn=10, tn=190, fp=10)
    out = rogan_gladen(40, 200, err)
    assert out["estimate"] == pytest.approx(0.15 / 0.85)
    assert out["low"] < out["estimate"] < out["high"] and out["estimator"] == "rogan-gladen"
    assert out["judge_error"]["sensitivity"] == pytest.approx(0.9)
    # a flag rate below the false-positive rate is clipped to 0, not negative
    assert rogan_gladen_point(0.01, 0.9, 0.95) == 0.0


def test_a_judge_no_better_than_chance_gives_no_corrected_rate():
    out = rogan_gladen(20, 100, JudgeError(tp=5, fn=5, tn=5, fp=5))
    assert out["estimate"] is None and out["low"] is None and "undefined" in out["note"]


def test_stratified_worked_example():
    # 20 flagged, all read, 4 misaligned; 160 unflagged, 20 read, 2 misaligned: (20 * 0.2 + 160 * 0.1) / 180
    out = stratified([Stratum(size=20, read=20, misaligned=4), Stratum(size=160, read=20, misaligned=2)])
    assert out["estimate"] == pytest.approx(20 / 180)
    assert 0 < out["low"] < out["estimate"] < out["high"] < 0.3
    # a stratum with no positives still has width (Wilson at the effective n), so the interval is not a point
    zero = stratified([Stratum(size=100, read=30, misaligned=0)])
    assert zero["estimate"] == 0 and zero["high"] > 0.005


def test_rogan_gladen_interval_covers_the_truth():
    rng = np.random.default_rng(1)
    p, se, sp, n = 0.10, 0.6, 0.9, 300
    covered = 0
    sims = 200
    for i in range(sims):
        truth = rng.random(n) < p
        flags = np.where(truth, rng.random(n) < se, rng.random(n) < 1 - sp)
        err = JudgeError(tp=int(rng.binomial(80, se)), fn=0, tn=int(rng.binomial(400, sp)), fp=0)
        err = JudgeError(tp=err.tp, fn=80 - err.tp, tn=err.tn, fp=400 - err.tn)
        out = rogan_gladen(int(flags.sum()), n, err, seed=i, n_boot=2000)
        covered += out["low"] is not None and out["low"] <= p <= out["high"]
    assert 0.88 <= covered / sims <= 1.0


def test_a_difference_shares_the_judge_error():
    err = JudgeError(tp=30, fn=20, tn=180, fp=20)
    same = rogan_gladen_difference((30, 300), (30, 300), err)
    assert same["estimate"] == 0 and same["low"] < 0 < same["high"]
    apart = rogan_gladen_difference((90, 300), (30, 300), err)
    assert apart["low"] > 0
    # shared Se/Sp draws: narrower than treating the two corrections as independent
    a, b = rogan_gladen(90, 300, err, seed=1), rogan_gladen(30, 300, err, seed=2)
    independent = np.hypot(a["high"] - a["low"], b["high"] - b["low"])
    assert apart["high"] - apart["low"] < independent
    s = stratified_difference([Stratum(20, 20, 10), Stratum(160, 20, 4)], [Stratum(20, 20, 2), Stratum(160, 20, 0)])
    assert s["estimate"] == pytest.approx((10 + 32) / 180 - 2 / 180) and s["low"] > 0


def test_a_stratified_null_carries_its_power():
    """The MDE of a by-reading difference is that of random samples of the Kish effective sizes:
    all-read strata (weights 1) give exactly the unweighted MDE; unequal weights give a larger one."""
    from characterlab.stats import minimum_detectable_difference

    flat = stratified_difference([Stratum(100, 100, 2)], [Stratum(100, 100, 1)])
    assert flat["minimum_detectable"] == pytest.approx(minimum_detectable_difference(0.01, 100, 100))
    weighted = stratified_difference([Stratum(20, 20, 0), Stratum(180, 30, 1)], [Stratum(20, 20, 0), Stratum(180, 30, 0)])
    n_eff = effective_n([Stratum(20, 20, 0), Stratum(180, 30, 0)])
    assert n_eff < 50
    assert weighted["minimum_detectable"] == pytest.approx(minimum_detectable_difference(0.0, n_eff, n_eff))
    assert weighted["minimum_detectable"] > minimum_detectable_difference(0.0, 50, 50)
