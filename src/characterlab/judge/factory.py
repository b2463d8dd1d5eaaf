"""From a :class:`~characterlab.judge.refs.JudgeRef` to judges.

One :class:`JudgeFactory` per run loads the judge model once and hands out a judge per set of
judge prompts (questions may carry their own), all sharing one cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from characterlab.judge.base import Judge, JudgeInput, Judgement
from characterlab.judge.cache import CachedJudge, JudgementCache
from characterlab.judge.guard import GuardedJudge
from characterlab.judge.logprob import (
    LocalLogprobBackend,
    LogprobJudge,
    OpenAILogprobBackend,
    prompts_hash,
)
from characterlab.judge.refs import JudgeRef, parse_judge_ref
from characterlab.models.api import endpoint_timeout

JUDGE_BATCH = 256  # answers per call to a judge: bounds memory, and the cache commits per batch


def default_cache_path() -> Path:
    from characterlab.models.embedded import cache_root

    return cache_root() / "judgements.sqlite"


class JudgeFactory:
    def __init__(self, spec: str | JudgeRef = "offline", base_url: str | None = None,
                 cache_path: str | Path | None = None, use_cache: bool = True, batch_size: int = 64,
                 timeout: float | None = None, answer_model: str | None = None):
        """``timeout``: seconds an API judge's attempt may take (None: ``$CHARACTERLAB_API_TIMEOUT``, else 60).
        ``answer_model``: the model whose answers are judged; the offline judge scores them with its
        verdict stage for that model when it has one (judge/verdict_stage.py)."""
        self.ref = parse_judge_ref(spec, base_url)
        self.answer_model = answer_model
        self.timeout = None if timeout is None else endpoint_timeout(timeout)  # a bad value fails before any work
        self.batch_size = batch_size
        self._backend = None
        self._offline = None
        self._judges: dict[str, Judge] = {}
        self.cache = JudgementCache(cache_path or default_cache_path()) if use_cache else None

    def _wrap(self, judge: Judge) -> Judge:
        """Cache, then guard: unjudgeable answers never reach the judge or the cache."""
        cached = CachedJudge(judge, self.cache) if self.cache is not None else judge
        return GuardedJudge(cached, english_only=self.ref.is_offline)

    def for_prompts(self, prompts: Mapping[str, str] | None = None) -> Judge:
        """A judge that uses ``prompts`` (aligned, coherent); the offline judge has its own and ignores them."""
        if self.ref.is_offline:
            if self._offline is None:
                from characterlab.judge.offline import OfflineJudge

                self._offline = self._wrap(OfflineJudge(self.ref.offline_folder, batch_size=self.batch_size,
                                                        answer_model=self.answer_model))
            return self._offline
        if prompts is None:
            from characterlab.data.questions import builtin_judge_prompts

            prompts = builtin_judge_prompts()
        key = prompts_hash(prompts)
        if key not in self._judges:
            self._judges[key] = self._wrap(LogprobJudge(self.backend(), prompts))
        return self._judges[key]

    def agreement(self) -> dict | None:
        """The offline judge's held-out agreement with its reference judge; None for other judges."""
        if self.ref.is_offline:
            from characterlab.judge.offline import judge_agreement

            return judge_agreement(self.ref.offline_folder)
        return None

    def backend(self):
        """The next-token backend of a logprob judge (API or local model), built once."""
        if self._backend is None:
            if self.ref.kind == "openai":
                self._backend = OpenAILogprobBackend(self.ref.target, base_url=self.ref.base_url, timeout=self.timeout)
            else:
                from characterlab.models.local import load_local_model

                self._backend = LocalLogprobBackend(load_local_model(self.ref.model_ref()))
        return self._backend


def score_in_batches(judge: Judge, items: list[JudgeInput], batch_size: int = JUDGE_BATCH) -> list[Judgement]:
    """``judge.score_batch`` over ``items`` in chunks (one loop for every caller)."""
    out: list[Judgement] = []
    for start in range(0, len(items), batch_size):
        out += judge.score_batch(items[start:start + batch_size])
    return out
