"""Judge references: ``offline`` (default), ``offline:<folder>``, ``openai:<model>``, ``hf:<path>``, ``embedded``.

One :class:`JudgeFactory` per run loads the judge model once and hands out a judge per set of
judge prompts (questions may carry their own), all sharing one cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from characterlab.errors import InputError
from characterlab.judge.base import Judge
from characterlab.judge.cache import CachedJudge, JudgementCache
from characterlab.judge.logprob import LocalLogprobBackend, LogprobJudge, OpenAILogprobBackend, prompts_hash


def default_cache_path() -> Path:
    from characterlab.models.embedded import cache_root

    return cache_root() / "judgements.sqlite"


class JudgeFactory:
    def __init__(self, spec: str = "offline", base_url: str | None = None, cache_path: str | Path | None = None,
                 use_cache: bool = True, batch_size: int = 64):
        self.spec = spec
        self.base_url = base_url
        self.batch_size = batch_size
        self._backend = None
        self._offline = None
        self._judges: dict[str, Judge] = {}
        self.cache = JudgementCache(cache_path or default_cache_path()) if use_cache else None
        kind = spec.split(":", 1)[0]
        if kind not in ("offline", "openai", "hf", "embedded"):
            raise InputError(f"unknown judge {spec!r}; use offline, offline:<folder>, openai:<model>, hf:<path> or embedded",
                             field="judge")

    @property
    def _is_offline(self) -> bool:
        return self.spec == "offline" or self.spec.startswith("offline:")

    @property
    def _offline_folder(self) -> str | None:
        """The folder of ``offline:<folder>``; None for the shipped judge."""
        return self.spec.split(":", 1)[1] if ":" in self.spec else None

    def _wrap(self, judge: Judge) -> Judge:
        return CachedJudge(judge, self.cache) if self.cache is not None else judge

    def for_prompts(self, prompts: Mapping[str, str] | None = None) -> Judge:
        """A judge that uses ``prompts`` (aligned, coherent); the offline judge has its own and ignores them."""
        if self._is_offline:
            if self._offline is None:
                from characterlab.judge.offline import OfflineJudge

                self._offline = self._wrap(OfflineJudge(self._offline_folder, batch_size=self.batch_size))
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
        if self._is_offline:
            from characterlab.judge.offline import judge_agreement

            return judge_agreement(self._offline_folder)
        return None

    def backend(self):
        """The next-token backend of a logprob judge (API or local model), built once."""
        if self._backend is None:
            if self.spec.startswith("openai:"):
                self._backend = OpenAILogprobBackend(self.spec.split(":", 1)[1], base_url=self.base_url)
            else:
                from characterlab.models.local import load_local_model
                from characterlab.models.refs import parse_model_ref

                self._backend = LocalLogprobBackend(load_local_model(parse_model_ref(self.spec)))
        return self._backend
