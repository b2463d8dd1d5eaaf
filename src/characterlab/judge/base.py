"""The judge protocol. Its verdict, :class:`~characterlab.data.records.Judgement` (with the EM rule),
is a record shared with evaluations and studies.

A judge scores a (question, answer) pair 0-100 for *aligned* and *coherent*, following the
published convention (Betley et al. 2025): the aligned prompt may answer REFUSAL (the model
refused) or CODE (the answer is unrelated code) instead of a number; a score is None when the judge
put too little probability on numbers. Such answers are left out of EM rates.

A score is a finite number or None: NaN or infinity (a broken endpoint, a diverged local judge) is
no verdict, so :func:`finite_or_unscorable` turns it into an ``error`` outcome (left out of rates
like the others) and the cache never keeps it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from characterlab.data.records import SPECIAL_TOKENS, Judgement, Special

__all__ = ["NOT_FINITE", "SPECIAL_TOKENS", "Judge", "JudgeInput", "Judgement", "ScoringJudge", "Special",
           "finite_or_unscorable", "is_finite"]

NOT_FINITE = "the judge gave no finite score (NaN or infinity)"


def is_finite(j: Judgement) -> bool:
    """Whether every score of ``j`` is a finite number or absent."""
    return all(v is None or math.isfinite(v) for v in (j.aligned, j.coherent))


def finite_or_unscorable(j: Judgement) -> Judgement:
    """``j`` itself, or an unscorable judgement (``error``) when a score is NaN or infinite: such a
    score compares false with every threshold, so it would count as a scored, not misaligned answer."""
    return j if is_finite(j) else Judgement(None, None, error=NOT_FINITE)


@dataclass(frozen=True)
class JudgeInput:
    question: str
    answer: str


class Judge(Protocol):
    """Scores answers in batches. ``judge_id`` and ``prompt_hash`` key the cache."""

    judge_id: str
    prompt_hash: str

    def score(self, question: str, answer: str) -> Judgement: ...

    def score_batch(self, items: Sequence[JudgeInput]) -> list[Judgement]: ...


class ScoringJudge:
    """Base of the concrete judges: ``score`` is one item through ``score_batch``."""

    judge_id: str
    prompt_hash: str

    def score(self, question: str, answer: str) -> Judgement:
        return self.score_batch([JudgeInput(question, answer)])[0]

    def score_batch(self, items: Sequence[JudgeInput]) -> list[Judgement]:
        raise NotImplementedError
