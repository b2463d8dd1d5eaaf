"""Power of a comparison of two rates: our figures are statsmodels' own, and they are consistent."""

from __future__ import annotations

import pytest
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize
from typer.testing import CliRunner

from characterlab.stats import (
    difference_power,
    minimum_detectable_difference,
    n_for_power,
)


@pytest.mark.parametrize(("p0", "p1"), [(0.02, 0.08), (0.0, 0.11), (0.3, 0.2), (0.05, 0.5)])
def test_n_for_power_is_statsmodels(p0, p1):
    want = NormalIndPower().solve_power(effect_size=abs(proportion_effectsize(p1, p0)), power=0.8, alpha=0.05, ratio=1)
    assert n_for_power(p0, p1) == pytest.approx(want)
    assert n_for_power(0.1, 0.1) is None
    assert 1 < n_for_power(0.0, 1.0) < 5  # an effect too large for statsmodels' root finder still gets its n


@pytest.mark.parametrize(("p0", "n"), [(0.0, 36), (0.02, 300), (0.1, 1000)])
def test_the_minimum_detectable_difference_is_what_that_n_can_detect(p0, n):
    mde = minimum_detectable_difference(p0, n, n)
    assert 0 < mde < 1 and n_for_power(p0, p0 + mde) == pytest.approx(n, rel=1e-4)  # up to the solver's tolerance
    assert minimum_detectable_difference(p0, 4 * n, 4 * n) < mde  # more samples, smaller detectable effects


def test_difference_power_marks_significance_by_the_newcombe_interval():
    strong = difference_power(22, 200, 0, 200)
    assert strong["significant"] and strong["low"] > 0
    weak = difference_power(2, 36, 0, 36)
    assert not weak["significant"] and weak["low"] < 0 < weak["high"]
    assert weak["minimum_detectable"] > strong["minimum_detectable"]
    assert weak["n_for_power"] > 36  # 5.6% vs 0% needs more than the 36 samples used


def test_power_cli():
    from characterlab.cli import app

    r = CliRunner().invoke(app, ["power", "--p0", "0.02", "--p1", "0.08", "--n", "300"])
    assert r.exit_code == 0 and "187 samples per condition" in r.output and "n = 300" in r.output
