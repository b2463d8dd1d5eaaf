import pytest

from characterlab.stats import (
    bootstrap_difference,
    bootstrap_rate,
    newcombe_difference,
    wilson_interval,
)


def test_wilson_matches_published_values():
    # Newcombe (1998), table I: 81/263 -> 0.2553 to 0.3662.
    iv = wilson_interval(81, 263)
    assert iv.low == pytest.approx(0.2553, abs=1e-4) and iv.high == pytest.approx(0.3662, abs=1e-4)
    zero = wilson_interval(0, 10)
    assert zero.estimate == 0 and zero.low == 0 and zero.high == pytest.approx(0.2775, abs=1e-4)


def test_newcombe_difference_matches_published_example():
    # Newcombe (1998) example: 56/70 - 48/80 -> 0.0524 to 0.3339.
    d = newcombe_difference(56, 70, 48, 80)
    assert d.estimate == pytest.approx(0.2)
    assert d.low == pytest.approx(0.0524, abs=1e-3) and d.high == pytest.approx(0.3339, abs=1e-3)


def test_question_bootstrap_is_wider_when_questions_disagree():
    even = bootstrap_rate([(5, 50)] * 8)
    uneven = bootstrap_rate([(0, 50)] * 4 + [(10, 50)] * 4)
    assert even.estimate == uneven.estimate == pytest.approx(0.1)
    assert even.high - even.low < 1e-9  # identical questions: nothing to resample
    assert uneven.low < 0.06 and uneven.high > 0.14


def test_paired_bootstrap_difference():
    a = {f"q{i}": (10, 50) for i in range(6)}
    b = {f"q{i}": (2, 50) for i in range(6)}
    d = bootstrap_difference(a, b)
    assert d.estimate == pytest.approx(0.16) and d.low > 0.1


def test_welch_difference_from_moments_matches_scipy_on_the_raw_scores():
    import numpy as np
    from scipy.stats import ttest_ind

    from characterlab.evals.em import moments
    from characterlab.stats import welch_difference

    rng = np.random.default_rng(0)
    a, b = rng.normal(70, 15, 180), rng.normal(62, 25, 150)
    d = welch_difference(moments(list(a)), moments(list(b)))
    ci = ttest_ind(a, b, equal_var=False).confidence_interval()
    assert abs(d["estimate"] - (a.mean() - b.mean())) < 1e-9
    assert abs(d["low"] - ci.low) < 1e-6 and abs(d["high"] - ci.high) < 1e-6 and d["significant"]
    assert welch_difference(moments([1.0]), moments([2.0, 3.0])) is None
