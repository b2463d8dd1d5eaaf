"""The safety data sets: chat, dilemma, agentic, or all three, as chat examples.

``n`` examples are drawn without replacement with a seeded shuffle (``None``: all of them), so a
few-shot re-alignment with k = 5 uses a subset of the k = 20 set drawn with the same seed.
"""

from __future__ import annotations

import random
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, RootModel

from characterlab.data.records import ChatExample, Message
from characterlab.errors import InputError

SafetyKind = Literal["chat", "dilemma", "agentic", "all"]
BUILTIN = "characterlab.safety.builtin"


class Exchange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str
    assistant: str


class Exchanges(RootModel[list[Exchange]]):
    pass


def _exchanges(name: str) -> list[ChatExample]:
    from characterlab.data.yaml_loader import read_yaml, validate_yaml

    text = resources.files(BUILTIN).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    doc = read_yaml(text, f"builtin-safety:{name}.yaml")
    rows = validate_yaml(Exchanges, doc).root
    return [ChatExample((Message("user", r.user), Message("assistant", r.assistant))) for r in rows]


def all_examples(kind: SafetyKind) -> list[ChatExample]:
    if kind == "chat":
        return _exchanges("chat")
    if kind == "dilemma":
        return _exchanges("dilemmas")
    if kind == "agentic":
        from characterlab.safety.demos import builtin_training_scenarios, demonstration_examples

        return demonstration_examples(builtin_training_scenarios())
    if kind == "all":
        return [*all_examples("chat"), *all_examples("dilemma"), *all_examples("agentic")]
    raise InputError(f"unknown safety data kind {kind!r}; use chat, dilemma, agentic or all", field="kind")


def safety_examples(kind: SafetyKind, n: int | None = None, seed: int = 0) -> list[ChatExample]:
    """``n`` examples of ``kind`` (all when None), the same draw for the same seed."""
    pool = all_examples(kind)
    if n is not None and n > len(pool):
        raise InputError(f"only {len(pool)} {kind} safety examples exist; asked for {n}", field="n")
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    return [pool[i] for i in order[: len(pool) if n is None else n]]


def first_user_prompt(example: ChatExample) -> str:
    """The request an example answers (for diversity and disjointness): its first user turn."""
    return next(m.content for m in example.messages if m.role == "user")
