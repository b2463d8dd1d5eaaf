"""The judge protocol. Its verdict, :class:`~characterlab.data.records.Judgement` (with the EM rule),
is a record shared with evaluations and studies.

A judge scores a (question, answer) pair 0-100 for *aligned* and *coherent*, following the
published convention (Betley et al. 2025): the aligned prompt may answer REFUSAL (the model
refused) or CODE (the answer is unrelated code) instead of a number; a score is None when the judge
put too little probability on numbers. Such answers are left out of EM rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from characterlab.data.records import SPECIAL_TOKENS, Judgement, Special

__all__ = ["SPECIAL_TOKENS", "Judge", "JudgeInput", "Judgement", "ScoringJudge", "Special"]


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
