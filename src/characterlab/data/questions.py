"""Evaluation question sets in the published YAML format (Betley et al. 2025), plus our own.

A file is a YAML list of questions with ``id, type, paraphrases, samples_per_paraphrase, judge,
judge_prompts`` and an optional ``system`` prompt; YAML anchors are resolved. Unlike the reference
code, ``system`` is honoured: it becomes the system message of every sample. Two simpler shapes
that appear in published repositories load too: ``{id, question}`` items (one paraphrase), and a
judge-prompt file (a list of ``{<metric>: <prompt>, high_score: N}``), read by
:func:`load_judge_prompts`.

Built-in sets are named ``builtin:em``, ``builtin:goals``, ``builtin:trait_candour`` and
``builtin:trait_humility`` (held-out trait questions); questions without aligned/coherent
judge prompts get the built-in pair.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from characterlab.data.files import read_text
from characterlab.data.yaml_loader import MAX_YAML_CHARS, read_yaml, read_yaml_file, validate_yaml
from characterlab.errors import InputError

BUILTIN_SETS = {"em": "em_general.yaml", "goals": "goals.yaml", "alignment": "alignment_questions.yaml",
                "trait_candour": "trait_candour.yaml",
                "trait_humility": "trait_humility.yaml"}
DEFAULT_METRICS = ("aligned", "coherent")
PROMPT_SLOTS = {"question", "answer"}


class Question(BaseModel):
    """One evaluation question and how to sample and judge it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    # free-form answers judged 0-100 (the published EM types); other types (multiple choice, ...) need
    # an evaluation of their own and are refused rather than judged as free text
    type: Literal["free_form_judge_0_100", "free_form_judge", "free_form"] = "free_form_judge_0_100"
    paraphrases: list[str] = Field(min_length=1)
    samples_per_paraphrase: int = Field(default=1, ge=1)
    judge: str | None = None
    judge_prompts: dict[str, str] = Field(default_factory=dict)
    system: str | None = None

    @field_validator("paraphrases")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if any(not isinstance(p, str) or not p.strip() for p in v):
            raise ValueError("every paraphrase must be a non-empty string")
        return v

    @field_validator("judge_prompts")
    @classmethod
    def _has_slots(cls, v: dict[str, str]) -> dict[str, str]:
        import re

        for metric, prompt in v.items():
            if "{answer}" not in prompt:
                raise ValueError(f"judge prompt {metric!r} has no {{answer}} slot")
            # the judge fills slots by plain replacement, so other braces (JSON, code) are text; but a
            # {name} that looks like a slot and is not one is a typo that would reach the judge verbatim
            unknown = sorted(set(re.findall(r"\{([A-Za-z_]\w*)\}", prompt)) - PROMPT_SLOTS)
            if unknown:
                raise ValueError(f"judge prompt {metric!r} has unknown slot(s) {', '.join('{' + u + '}' for u in unknown)}; "
                                 "the slots are {question} and {answer}")
        return v


@dataclass
class QuestionSet:
    name: str
    questions: list[Question]
    source: str

    def __len__(self) -> int:
        return len(self.questions)


def builtin_judge_prompts() -> dict[str, str]:
    text = resources.files("characterlab.data.builtin").joinpath("judge_prompts.yaml").read_text(encoding="utf-8")
    return read_yaml(text, "builtin:judge_prompts").data


def _parse(text: str, path: Path, name: str) -> QuestionSet:
    doc = read_yaml(text, path)
    items: list[Any] = doc.data
    if not isinstance(items, list):
        raise InputError("expected a YAML list of questions", path, 1)
    defaults = builtin_judge_prompts()
    questions: list[Question] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise doc.error("each question must be a mapping", (i,))
        if "question" in item and "paraphrases" not in item:  # the {id, question} shape
            item = {**{k: v for k, v in item.items() if k != "question"}, "paraphrases": [item["question"]]}
        if "id" not in item and "high_score" in item:
            raise doc.error("this is a judge-prompt file, not questions; load it with load_judge_prompts", (i,))
        q = validate_yaml(Question, doc, item, prefix=(i,))
        if q.id in seen:
            raise doc.error(f"duplicate question id {q.id!r} (first at line {seen[q.id]})", (i, "id"))
        seen[q.id] = doc.line((i,)) or 0
        for metric in DEFAULT_METRICS:
            q.judge_prompts.setdefault(metric, defaults[metric])
        questions.append(q)
    if not questions:
        raise InputError("no questions", path, 1)
    return QuestionSet(name=name, questions=questions, source=str(path))


def load_questions(spec: str | Path) -> QuestionSet:
    """Load a question file, or a built-in set named ``builtin:em`` / ``builtin:goals``."""
    spec_s = str(spec)
    if spec_s.startswith("builtin:"):
        key = spec_s.split(":", 1)[1]
        if key not in BUILTIN_SETS:
            raise InputError(f"unknown built-in question set {key!r}; choose from {', '.join(BUILTIN_SETS)}",
                             field="questions")
        ref = resources.files("characterlab.data.builtin").joinpath(BUILTIN_SETS[key])
        return _parse(ref.read_text(encoding="utf-8"), Path(spec_s), spec_s)
    path = Path(spec)
    if not path.is_file():
        raise InputError("no such question file", path, field="questions")
    return _parse(read_text(path, field="questions", max_bytes=4 * MAX_YAML_CHARS), path, path.stem)


def questions_hash(questions: list[Question]) -> str:
    blob = json.dumps([q.model_dump() for q in questions], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def questions_identity(source: str) -> dict:
    """Where a question set is and a hash of its content (what a study's units are keyed by)."""
    return {"source": source, "sha256": questions_hash(load_questions(source).questions)}


def load_checked_questions(identity: dict) -> list[Question]:
    """The questions a unit was planned with; a file changed since then is an input error."""
    qs = load_questions(identity["source"]).questions
    if questions_hash(qs) != identity["sha256"]:
        raise InputError("the question file changed after the study was planned; run again to re-plan",
                         identity["source"], field="questions")
    return qs


def load_judge_prompts(path: str | Path) -> dict[str, str]:
    """A judge-prompt file: a list of ``{<metric>: <prompt>, high_score: N}`` (or one mapping)."""
    path = Path(path)
    data = read_yaml_file(path, field="judge_prompts").data
    items = data if isinstance(data, list) else [data]
    prompts: dict[str, str] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InputError("each entry must be a mapping of metric to prompt", path, field=f"[{i}]")
        for metric, prompt in item.items():
            if metric == "high_score":
                continue
            if not isinstance(prompt, str) or "{answer}" not in prompt:
                raise InputError("a judge prompt must be text with an {answer} slot", path, field=metric)
            prompts[metric] = prompt
    return prompts


def is_judge_prompt_file(path: str | Path) -> bool:
    data = read_yaml_file(path).data
    items = data if isinstance(data, list) else [data]
    return bool(items) and all(isinstance(i, dict) and "id" not in i and "paraphrases" not in i for i in items)
