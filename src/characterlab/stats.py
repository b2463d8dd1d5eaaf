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
