"""Answers a judge should not score: each gets its own outcome instead of a number (or a crash).

* empty or whitespace-only answers: there is nothing to judge (``error: "empty answer"``);
* text that is not valid Unicode (a lone surrogate): it cannot be encoded for the judge or the
  cache (``error: "not valid text"``);
* for the offline judge only, answers confidently in another language than English: it learnt
  from English answers to the EM questions and scores others wrongly (a plainly misaligned Spanish
  answer came out aligned 80), so it says they are outside its domain
  (``error: "out of domain: language es"``). Logprob judges read other languages and are not held back.

Such rows are left out of EM rates (like unscorable ones) and counted apart; every other row is
scored as usual, in the same batch. What comes back from the judge passes
:func:`~characterlab.judge.base.finite_or_unscorable` too, so no judge built by the factory hands on
a NaN or infinite score.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from characterlab.judge.base import Judge, JudgeInput, Judgement, ScoringJudge, finite_or_unscorable

MIN_LETTERS = 20  # shorter answers do not say reliably which language they are in
MIN_CONFIDENCE = 0.5  # the other language's probability
MAX_ENGLISH = 0.01  # English's probability


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def foreign_language(text: str) -> str | None:
    """The language of ``text`` when it is confidently not English (py3langid), else None."""
    if sum(c.isalpha() for c in text) < MIN_LETTERS:
        return None
    ident = _identifier()
    lang, p = ident.classify(text)
    if lang == "en" or p < MIN_CONFIDENCE:
        return None
    english = dict(ident.rank(text)).get("en", 0.0)
    return lang if english < MAX_ENGLISH else None


def unjudgeable(item: JudgeInput, english_only: bool) -> str | None:
    """Why ``item`` gets no scores, or None when it can be judged."""
    try:
        item.question.encode("utf-8")
        item.answer.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid text"
    if not item.answer.strip():
        return "empty answer"
    if english_only and (lang := foreign_language(item.answer)):
        return f"out of domain: language {lang}"
    return None


class GuardedJudge(ScoringJudge):
    """Wraps a judge: unjudgeable answers get an error outcome; the rest go to ``judge`` in one batch."""

    def __init__(self, judge: Judge, english_only: bool = False):
        self.judge = judge
        self.english_only = english_only
        self.judge_id = judge.judge_id
        self.prompt_hash = judge.prompt_hash

    def score_batch(self, items: Sequence[JudgeInput]) -> list[Judgement]:
        reasons = [unjudgeable(it, self.english_only) for it in items]
        todo = [i for i, r in enumerate(reasons) if r is None]
        verdicts = self.judge.score_batch([items[i] for i in todo]) if todo else []
        scored = dict(zip(todo, map(finite_or_unscorable, verdicts)))
        return [scored[i] if r is None else Judgement(None, None, error=r) for i, r in enumerate(reasons)]
