"""Evaluation question sets in the published YAML format (Betley et al. 2025), plus our own.

A file is a YAML list of questions with ``id, type, paraphrases, samples_per_paraphrase, judge,
judge_prompts`` and an optional ``system`` prompt; YAML anchors are resolved. Unlike the reference
code, ``system`` is honoured: it becomes the system message of every sample. Two simpler shapes
that appear in published repositories load too: ``{id, question}`` items (one paraphrase), and a
judge-prompt file (a list of ``{<metric>: <prompt>, high_score: N}``), read by
:func:`load_judge_prompts`.

Built-in sets are named ``builtin:em`` and ``builtin:goals``; questions without aligned/coherent
judge prompts get the built-in pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from characterlab.errors import InputError

BUILTIN_SETS = {"em": "em_general.yaml", "goals": "goals.yaml"}
DEFAULT_METRICS = ("aligned", "coherent")


class Question(BaseModel):
    """One evaluation question and how to sample and judge it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    type: str = "free_form_judge_0_100"
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
        for metric, prompt in v.items():
            if "{answer}" not in prompt:
                raise ValueError(f"judge prompt {metric!r} has no {{answer}} slot")
        return v


@dataclass
class QuestionSet:
    name: str
    questions: list[Question]
    source: str

    def __len__(self) -> int:
        return len(self.questions)


def _node_lines(text: str, path: Path) -> list[dict[str, int]]:
    """1-based line of each list item and of each of its keys, for error messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InputError(f"not valid YAML: {getattr(e, 'problem', e)}", path, mark.line + 1 if mark else None) from None
    if root is None or not isinstance(root, yaml.SequenceNode):
        raise InputError("expected a YAML list of questions", path, 1)
    lines = []
    for item in root.value:
        entry = {"": item.start_mark.line + 1}
        if isinstance(item, yaml.MappingNode):
            for key, value in item.value:
                entry[str(key.value)] = key.start_mark.line + 1
        lines.append(entry)
    return lines


def builtin_judge_prompts() -> dict[str, str]:
    text = resources.files("characterlab.data.builtin").joinpath("judge_prompts.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _parse(text: str, path: Path, name: str) -> QuestionSet:
    lines = _node_lines(text, path)
    items: list[Any] = yaml.safe_load(text)
    defaults = builtin_judge_prompts()
    questions: list[Question] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        where = lines[i]
        if not isinstance(item, dict):
            raise InputError("each question must be a mapping", path, where[""])
        if "question" in item and "paraphrases" not in item:  # the {id, question} shape
            item = {**{k: v for k, v in item.items() if k != "question"}, "paraphrases": [item["question"]]}
        if "id" not in item and "high_score" in item:
            raise InputError("this is a judge-prompt file, not questions; load it with load_judge_prompts", path,
                             where[""])
        try:
            q = Question.model_validate(item)
        except ValidationError as e:
            err = e.errors()[0]
            field = str(err["loc"][0]) if err["loc"] else None
            raise InputError(err["msg"], path, where.get(field or "", where[""]), field) from None
        if q.id in seen:
            raise InputError(f"duplicate question id {q.id!r} (first at line {seen[q.id]})", path, where[""], "id")
        seen[q.id] = where[""]
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
    return _parse(path.read_text(encoding="utf-8"), path, path.stem)


def load_judge_prompts(path: str | Path) -> dict[str, str]:
    """A judge-prompt file: a list of ``{<metric>: <prompt>, high_score: N}`` (or one mapping)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
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
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    items = data if isinstance(data, list) else [data]
    return bool(items) and all(isinstance(i, dict) and "id" not in i and "paraphrases" not in i for i in items)
