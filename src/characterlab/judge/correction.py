"""EM rates corrected for the judge's measured error, with intervals that carry that error.

A judge's flag rate is not the misaligned rate when the judge errs: with sensitivity Se and
specificity Sp measured on held-out gold (answers people labelled by reading,
docs/gold-labelling.md), the observed flag rate is ``q = Se p + (1 - Sp)(1 - p)``, so

    p = (q + Sp - 1) / (Se + Sp - 1)                        (Rogan and Gladen, 1978)

clipped to [0, 1]. Where a condition has its own labelled sample, drawn in strata of the judge's
verdict, the stratified estimate ``sum_h N_h (y_h / n_h) / N`` needs no model of the judge at all.

Rogan-Gladen intervals are a parametric bootstrap over every measured share: each replicate
draws the flag rate, Se and Sp from their Jeffreys posteriors Beta(k + 1/2, n - k + 1/2) and
recomputes the estimate; the 2.5th and 97.5th percentiles bound it (Jeffreys rather than a
resampled share because gold with 0 positives would otherwise have no spread). A difference of
two corrected rates draws Se and Sp once per replicate for both sides (one judge, one gold set),
so their shared error cancels as it should. Stratified rates take a Wilson interval at Kish's
effective sample size, and their differences Newcombe's, as every other rate of the project.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

N_BOOT = 20_000
LEVEL = 0.95


@dataclass(frozen=True)
class JudgeError:
    """The judge's flag against readers' verdicts on held-out gold: true/false positives/negatives
    (effective counts when the gold rows carry sampling weights, so not always whole numbers)."""

    tp: float
    fn: float
    tn: float
    fp: float

    @property
    def sensitivity(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def specificity(self) -> float:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else float("nan")

    def to_dict(self) -> dict:
        return {"tp": self.tp, "fn": self.fn, "tn": self.tn, "fp": self.fp,
                "sensitivity": _none_if_nan(self.sensitivity), "specificity": _none_if_nan(self.specificity)}


@dataclass(frozen=True)
class Stratum:
    """One stratum of a labelled sample: its size in the cell, how many were read, how many misaligned."""

    size: int
    read: int
    misaligned: int


def _none_if_nan(x: float) -> float | None:
    return None if x != x else float(x)


def _jeffreys(k: int, n: int, rng: np.random.Generator, size: int) -> np.ndarray:
    return rng.beta(k + 0.5, n - k + 0.5, size=size)


def rogan_gladen_point(q: float, se: float, sp: float) -> float | None:
    """The corrected rate of a flag rate ``q``; None when the judge is no better than chance (Se + Sp <= 1)."""
    youden = se + sp - 1
    if not youden > 0:
        return None
    return float(min(1.0, max(0.0, (q + sp - 1) / youden)))


def _rg_draws(k: int, n: int, se: np.ndarray, sp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    q = _jeffreys(k, n, rng, len(se))
    youden = se + sp - 1
    return np.clip((q + sp - 1) / np.where(youden > 0, youden, np.nan), 0.0, 1.0)


def _error_draws(err: JudgeError, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    return _jeffreys(err.tp, err.tp + err.fn, rng, size), _jeffreys(err.tn, err.tn + err.fp, rng, size)


def _interval(point: float | None, draws: np.ndarray, estimator: str, share: bool = True, **extra) -> dict:
    alpha = (1 - LEVEL) / 2
    ok = draws[~np.isnan(draws)]
    if point is None or len(ok) < 0.9 * len(draws):  # the judge is near chance in too many replicates
        return {"estimate": point, "low": None, "high": None, "estimator": estimator,
                "note": "undefined: the judge's Se + Sp is not clearly above 1", **extra}
    low, high = np.quantile(ok, [alpha, 1 - alpha])
    # Jeffreys draws sit above a share of 0 (their mean is (k + 1/2) / (n + 1)), so the interval
    # is widened to hold the estimate, and starts at 0 when the estimate is 0, as the Jeffreys
    # interval of a single share does.
    low, high = (0.0 if share and point == 0 else min(float(low), point)), max(float(high), point)
    return {"estimate": point, "low": low, "high": high, "estimator": estimator, **extra}


def rogan_gladen(k: int, n: int, err: JudgeError, seed: int = 0, n_boot: int = N_BOOT) -> dict:
    """A flag count ``k`` of ``n`` scored answers, corrected by the judge's error ``err``."""
    rng = np.random.default_rng(seed)
    se, sp = _error_draws(err, rng, n_boot)
    point = rogan_gladen_point(k / n, err.sensitivity, err.specificity) if n else None
    return _interval(point, _rg_draws(k, n, se, sp, rng), "rogan-gladen", judge_error=err.to_dict())


def rogan_gladen_difference(a: tuple[int, int], b: tuple[int, int], err: JudgeError, seed: int = 0,
                            n_boot: int = N_BOOT) -> dict:
    """Corrected rate of ``a`` minus that of ``b`` (each ``(flagged, scored)``), one judge error for both."""
    rng = np.random.default_rng(seed)
    se, sp = _error_draws(err, rng, n_boot)
    pa = rogan_gladen_point(a[0] / a[1], err.sensitivity, err.specificity) if a[1] else None
    pb = rogan_gladen_point(b[0] / b[1], err.sensitivity, err.specificity) if b[1] else None
    point = None if pa is None or pb is None else pa - pb
    draws = _rg_draws(a[0], a[1], se, sp, rng) - _rg_draws(b[0], b[1], se, sp, rng)
    return _interval(point, draws, "rogan-gladen", share=False)


def stratified_point(strata: Sequence[Stratum]) -> float | None:
    read = [s for s in strata if s.read]
    if not read:
        return None
    return sum(s.size * s.misaligned / s.read for s in read) / sum(s.size for s in read)


def effective_n(strata: Sequence[Stratum]) -> float:
    """Kish's effective sample size of the read answers, each weighted by its stratum's
    size / read: how many answers drawn at random the weighted sample is worth."""
    read = [s for s in strata if s.read]
    total = sum(s.size for s in read)
    return total ** 2 / sum(s.size ** 2 / s.read for s in read) if read else 0.0


def stratified(strata: Sequence[Stratum]) -> dict:
    """The misaligned rate of a cell from its labelled sample, each stratum weighted by its size,
    with a Wilson interval at Kish's effective sample size (the design effect of the unequal
    weights; at a rate of 0 the interval still has width, unlike a resampled one).

    A stratum nobody read is left out of the weights (its share of the cell is reported as
    ``unread_share``): the estimate is then of the read strata only, and says so.
    """
    from characterlab.stats import wilson_interval

    point = stratified_point(strata)
    unread = sum(s.size for s in strata if not s.read) / max(1, sum(s.size for s in strata))
    n_eff = effective_n(strata)
    base = {"estimator": "stratified", "read": sum(s.read for s in strata), "effective_n": n_eff,
            "unread_share": unread}
    if point is None:
        return {"estimate": None, "low": None, "high": None, **base}
    w = wilson_interval(point * n_eff, n_eff)
    return {"estimate": point, "low": w.low, "high": w.high, **base}


def stratified_difference(a: Sequence[Stratum], b: Sequence[Stratum]) -> dict:
    """Stratified rate of ``a`` minus that of ``b`` (independent samples): Newcombe's interval
    from the two effective-sample Wilson intervals, and the smallest increase over ``b`` that
    samples of these effective sizes detect with 80% power (a null needs its power beside it)."""
    from characterlab.stats import minimum_detectable_difference, newcombe_difference

    pa, pb = stratified_point(a), stratified_point(b)
    if pa is None or pb is None:
        return {"estimate": None, "low": None, "high": None, "estimator": "stratified"}
    na, nb = effective_n(a), effective_n(b)
    d = newcombe_difference(pa * na, na, pb * nb, nb)
    return {"estimate": pa - pb, "low": d.low, "high": d.high, "estimator": "stratified",
            "minimum_detectable": minimum_detectable_difference(pb, nb, na)}
