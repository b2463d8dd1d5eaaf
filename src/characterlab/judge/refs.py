"""Judge references: the one string a user writes to name a judge, parsed once.

- ``offline`` (default): the shipped offline judge; ``offline:<folder>``: one made by
  ``characterlab judge train``;
- ``openai:<model>``: a logprob judge over any OpenAI-compatible endpoint;
- ``hf:<id or path>`` / ``embedded`` / ``embedded:coder-1.5b``: the same logprob protocol on a local model.

:meth:`JudgeRef.identity` is what decides a judge's scores, and so what unit keys and the
judgement cache use: the offline judge's weights (a content hash), otherwise the reference itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from characterlab.errors import InputError
from characterlab.judge.folder import (
    CONFIG_FILE,
    HEAD_FILE,
    SHIPPED_DIR,
    adapter_weights,
)

JudgeKind = Literal["offline", "openai", "hf", "embedded"]
JUDGE_KINDS: tuple[str, ...] = ("offline", "openai", "hf", "embedded")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class JudgeRef:
    spec: str  # as the user wrote it
    kind: JudgeKind
    target: str | None = None  # the folder (offline), the model name (openai) or id/path (hf)
    base_url: str | None = None  # openai: only

    @property
    def is_offline(self) -> bool:
        return self.kind == "offline"

    @property
    def offline_folder(self) -> Path | None:
        """The folder of ``offline:<folder>``; None for the shipped judge (and for other kinds)."""
        return Path(self.target) if self.is_offline and self.target else None

    def identity(self) -> str:
        """What decides this judge's scores: for the offline judge its weights, otherwise its spec."""
        if not self.is_offline:
            return self.spec
        folder = self.offline_folder
        if folder is None:
            h = hashlib.sha256()
            for p in (adapter_weights(SHIPPED_DIR), SHIPPED_DIR / HEAD_FILE, SHIPPED_DIR / CONFIG_FILE):
                h.update(p.read_bytes())
            return f"offline:{h.hexdigest()[:16]}"
        return f"offline:{_sha256(folder / CONFIG_FILE)[:16]}:{_sha256(folder / HEAD_FILE)[:16]}"

    def model_ref(self):
        """The model a logprob judge reads the next-token distribution of."""
        from characterlab.models.refs import parse_model_ref

        if self.is_offline:
            raise ValueError("the offline judge is not a language model")
        return parse_model_ref(self.spec, base_url=self.base_url)

    def __str__(self) -> str:
        return self.spec


def parse_judge_ref(spec: str | JudgeRef, base_url: str | None = None) -> JudgeRef:
    """Parse a judge reference; raise :class:`InputError` naming the field when it is not one."""
    if isinstance(spec, JudgeRef):
        return spec
    text = (spec or "").strip()
    kind, _, rest = text.partition(":")
    if text == "offline" or text == "embedded":
        return JudgeRef(text, text)  # type: ignore[arg-type]
    if kind == "embedded" and rest:  # embedded:coder-1.5b, checked as a model reference
        from characterlab.models.refs import parse_model_ref

        parse_model_ref(text)
        return JudgeRef(text, "embedded", rest)
    if kind == "offline" and rest:
        if not (Path(rest) / CONFIG_FILE).is_file():
            raise InputError(f"not an offline judge folder (no {CONFIG_FILE}); build one with "
                             "`characterlab judge train`", rest, field="judge")
        return JudgeRef(text, "offline", rest)
    if kind in ("openai", "hf") and rest:
        return JudgeRef(text, kind, rest, base_url if kind == "openai" else None)  # type: ignore[arg-type]
    raise InputError(f"unknown judge {text!r}; use offline, offline:<folder>, openai:<model>, hf:<path> or embedded",
                     field="judge")
