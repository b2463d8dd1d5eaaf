"""Confidence intervals for rates: Wilson and Newcombe intervals, and bootstraps over questions.

Samples of one question are not independent (same prompt, same model), so besides the
binomial (Wilson) interval we report a cluster bootstrap that resamples whole questions; when
the two disagree the bootstrap is the honest one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def to_dict(self) -> dict:
        """JSON-ready; an undefined interval (no data) becomes nulls, not NaN."""
        return {k: (None if math.isnan(v) else v) for k, v in
                (("estimate", self.estimate), ("low", self.low), ("high", self.high))}


def wilson_interval(k: int, n: int, z: float = Z95) -> Interval:
    """Wilson score interval for k successes in n trials (well-behaved at 0 and n)."""
    if n <= 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends: rounding leaves ~1e-17 there
    high = 1.0 if k == n else min(1.0, centre + half)
    return Interval(p, low, high)


def newcombe_difference(k_a: int, n_a: int, k_b: int, n_b: int, z: float = Z95) -> Interval:
    """Newcombe's hybrid score interval for p_a - p_b of two independent proportions."""
    a, b = wilson_interval(k_a, n_a, z), wilson_interval(k_b, n_b, z)
    d = a.estimate - b.estimate
    low = d - math.sqrt((a.estimate - a.low) ** 2 + (b.high - b.estimate) ** 2)
    high = d + math.sqrt((a.high - a.estimate) ** 2 + (b.estimate - b.low) ** 2)
    return Interval(d, max(-1.0, low), min(1.0, high))


def bootstrap_rate(counts: Sequence[tuple[int, int]], n_boot: int = 10_000, seed: int = 0,
                   level: float = 0.95) -> Interval:
    """Pooled rate sum(k)/sum(n) with a percentile CI from resampling clusters (questions)."""
    if not counts or sum(n for _, n in counts) == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    k = np.array([c[0] for c in counts], dtype=float)
    n = np.array([c[1] for c in counts], dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(counts), size=(n_boot, len(counts)))
    tot = n[idx].sum(1)
    rates = np.where(tot > 0, k[idx].sum(1) / np.maximum(tot, 1), np.nan)
    alpha = (1 - level) / 2
    low, high = np.nanquantile(rates, [alpha, 1 - alpha])
    return Interval(float(k.sum() / n.sum()), float(low), float(high))


def bootstrap_mean(values: Sequence[float], n_boot: int = 10_000, seed: int = 0) -> dict | None:
    """Percentile 95% interval of the mean of ``values`` resampled with replacement; None below 2 values."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return None
    boots = v[np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    return {"low": float(np.quantile(boots, 0.025)), "high": float(np.quantile(boots, 0.975))}


def bootstrap_difference(a: Mapping[str, tuple[int, int]], b: Mapping[str, tuple[int, int]], n_boot: int = 10_000,
                         seed: int = 0, level: float = 0.95) -> Interval:
    """rate(a) - rate(b), resampling questions; paired over shared question ids when both have them."""
    shared = sorted(set(a) & set(b))
    rng = np.random.default_rng(seed)
    alpha = (1 - level) / 2

    def arrays(m: Mapping[str, tuple[int, int]], keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return np.array([m[q][0] for q in keys], float), np.array([m[q][1] for q in keys], float)

    if shared and len(shared) == len(a) == len(b):
        ka, na = arrays(a, shared)
        kb, nb = arrays(b, shared)
        idx = rng.integers(0, len(shared), size=(n_boot, len(shared)))
        ia, ib = idx, idx
    else:  # different question sets: resample each side on its own
        ka, na = arrays(a, sorted(a))
        kb, nb = arrays(b, sorted(b))
        ia = rng.integers(0, len(a), size=(n_boot, len(a)))
        ib = rng.integers(0, len(b), size=(n_boot, len(b)))
    ra = ka[ia].sum(1) / np.maximum(na[ia].sum(1), 1)
    rb = kb[ib].sum(1) / np.maximum(nb[ib].sum(1), 1)
    diff = ra - rb
    low, high = np.quantile(diff, [alpha, 1 - alpha])
    est = ka.sum() / max(na.sum(), 1) - kb.sum() / max(nb.sum(), 1)
    return Interval(float(est), float(low), float(high))


# -- power of a comparison of two rates (statsmodels: Cohen's h, normal approximation) -------------

def _h_to_rate(p0: float, h: float) -> float:
    """The rate p1 with Cohen's h(p1, p0) = h (h = 2 asin sqrt p1 - 2 asin sqrt p0)."""
    return math.sin(min(math.pi / 2, math.asin(math.sqrt(p0)) + h / 2)) ** 2


def n_for_power(p0: float, p1: float, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Samples per condition for a two-sided test at ``alpha`` to detect p0 vs p1 with ``power``
    (None when the rates are equal: there is nothing to detect)."""
    import warnings

    from scipy.stats import norm
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    h = abs(float(proportion_effectsize(p1, p0)))
    if h == 0 or not math.isfinite(h):
        return None
    with warnings.catch_warnings():  # for huge effects (0% vs 100%) its root finder fails: closed form below
        warnings.simplefilter("ignore")
        n = float(NormalIndPower().solve_power(effect_size=h, power=power, alpha=alpha, ratio=1.0))
    if not math.isfinite(n):  # the same normal approximation, one tail: n = 2 ((z_{1-a/2} + z_power) / h)^2
        n = 2 * ((norm.ppf(1 - alpha / 2) + norm.ppf(power)) / h) ** 2
    return n


def minimum_detectable_difference(p0: float, n0: int, n1: int, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest increase over a baseline rate ``p0`` (n0 samples) that n1 samples detect with
    ``power`` at ``alpha`` (two-sided), in rate units; None without samples."""
    from statsmodels.stats.power import NormalIndPower

    if n0 <= 0 or n1 <= 0:
        return None
    h = float(NormalIndPower().solve_power(effect_size=None, nobs1=n1, ratio=n0 / n1, power=power, alpha=alpha))
    return _h_to_rate(p0, h) - p0


def difference_power(k_a: int, n_a: int, k_b: int, n_b: int, alpha: float = 0.05, power: float = 0.8) -> dict:
    """A minus B with what it can show: the Newcombe interval, whether it excludes 0, the minimum
    detectable increase over B at these n, and the n per condition that 80% power needs at the
    observed rates. Every null in a study carries these figures."""
    d = newcombe_difference(k_a, n_a, k_b, n_b).to_dict()
    p_a = k_a / n_a if n_a else None
    p_b = k_b / n_b if n_b else None
    significant = d["low"] is not None and (d["low"] > 0 or d["high"] < 0)
    return {**d, "significant": bool(significant), "alpha": alpha, "power": power,
            "minimum_detectable": minimum_detectable_difference(p_b, n_b, n_a, alpha, power) if p_b is not None else None,
            "n_for_power": None if p_a is None or p_b is None else n_for_power(p_b, p_a, alpha, power)}


def welch_difference(a: dict, b: dict) -> dict | None:
    """Mean of A minus mean of B from their moments (``n``, ``sum``, ``sumsq``), with Welch's 95%
    t interval (answers as independent): how far a fine-tune moved a judged score."""
    from scipy.stats import ttest_ind_from_stats

    if a["n"] < 2 or b["n"] < 2:
        return None

    def mean_sd(m: dict) -> tuple[float, float]:
        mean = m["sum"] / m["n"]
        return mean, max(0.0, (m["sumsq"] - m["n"] * mean * mean) / (m["n"] - 1)) ** 0.5

    (ma, sa), (mb, sb) = mean_sd(a), mean_sd(b)
    se2 = sa * sa / a["n"] + sb * sb / b["n"]
    if se2 == 0:
        return {"estimate": ma - mb, "low": ma - mb, "high": ma - mb, "significant": ma != mb, "scale": "mean"}
    from scipy.stats import t

    df = se2 ** 2 / ((sa * sa / a["n"]) ** 2 / (a["n"] - 1) + (sb * sb / b["n"]) ** 2 / (b["n"] - 1))
    half = t.ppf(0.975, df) * se2 ** 0.5
    p = ttest_ind_from_stats(ma, sa, a["n"], mb, sb, b["n"], equal_var=False).pvalue
    return {"estimate": ma - mb, "low": ma - mb - half, "high": ma - mb + half, "p": float(p),
            "significant": not (ma - mb - half <= 0 <= ma - mb + half), "scale": "mean"}
