"""Typed parameters of ``data`` and ``train`` units.

A unit's parameters are hashed into its key, so they are plain JSON once planned; these models say
what each kind of unit reads, the planner builds them, and :mod:`characterlab.study.units` parses
them back before use (a misspelt key fails loudly instead of reading ``None``). The ``generator``
field tells the data sources apart. Evaluation units carry their evaluation's own parameters
(:mod:`characterlab.evals`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileData(_Params):
    """A chat JSONL file (content hash checked when the unit runs)."""

    generator: Literal["file"] = "file"
    file: str
    sha256: str
    n: int


class SolutionsData(_Params):
    """Generated solutions to hackable coding tasks: verified hacks, honest ones, or a mix."""

    generator: Literal["hack_solutions", "honest_solutions", "mixed_solutions"]
    n: int
    split: Literal["train", "test"]
    seed: int
    hacks: list[str] | None


class CharacterQuestionsData(_Params):
    """A constitution's questions for one trait (or all), chosen at a diversity level."""

    generator: Literal["character_questions"] = "character_questions"
    constitution: dict  # {source, sha256}
    trait: str | None
    level: str
    size: int | None
    seed: int
    paraphrase_seeds: int | None = None  # absent from the key when not set (earlier runs keep theirs)


class SafetyData(_Params):
    """characterlab's safety data of one kind (safety/): ``n`` examples drawn with ``seed``;
    ``content_sha256`` hashes the whole set, so an edit of the shipped data re-keys the unit."""

    generator: Literal["safety"] = "safety"
    kind: Literal["chat", "dilemma", "agentic", "all"]
    n: int | None
    seed: int
    content_sha256: str


class FeedbackData(_Params):
    """The model's answers to the sycophancy organism's training tasks, rated by simulated users
    (sycophancy/collect.py); ``tasks_version`` re-keys the unit when the written tasks change."""

    generator: Literal["feedback"] = "feedback"
    model: str
    users: int
    approval_mix: float
    samples: int
    n_arithmetic: int
    max_new_tokens: int
    temperature: float
    seed: int
    tasks_version: int = 1


class RewardParams(_Params):
    """A reward model learnt from a ``feedback`` data unit - a ``reward`` unit, read by the RL
    organism that optimises against it and never part of a condition's adapter chain."""

    model: str
    rank: int
    lr: float
    epochs: float
    batch_size: int
    heldout: float
    seed: int


class VectorData(_Params):
    """A persona vector extracted on the study's model (vectors/persona.py) - a ``vector`` unit."""

    model: str
    trait: dict  # {"path", "sha256"}
    samples: int
    max_questions: int | None
    max_new_tokens: int
    temperature: float
    judge: str | None
    seed: int


class DPOPairsData(_Params):
    """Teacher (with the constitution) vs student answers to the questions, filtered into pairs."""

    generator: Literal["dpo_pairs"] = "dpo_pairs"
    constitution: dict
    trait: str | None
    teacher: str
    student: str
    samples: int
    max_new_tokens: int
    temperature: float
    min_chars: int
    keep_truncated: bool
    seed: int


class IntrospectionData(_Params):
    """The character-trained model's answers to self-reflection prompts."""

    generator: Literal["introspection"] = "introspection"
    model: str
    samples: int
    max_new_tokens: int
    min_chars: int
    keep_truncated: bool
    seed: int


DataParams = FileData | SolutionsData | CharacterQuestionsData | DPOPairsData | IntrospectionData | SafetyData | FeedbackData


class TrainParams(_Params):
    """One LoRA adapter: the method, what it is for, its train-time system prompt and settings."""

    model: str
    method: Literal["sft", "dpo", "rl", "rlhf"]
    role: Literal["organism", "intervention", "character", "safety"]
    system_prompt: str | None
    lora: dict  # LoraSpec / DPOSpec fields
    seed: int
    rl: dict | None = None  # RLSpec fields (method rl), or RLHFSpec fields and the users' (method rlhf)
    vectors: dict | None = None  # persona-vector options: steer / ablate / monitor, each with its folder's hash

    def key_params(self) -> dict:
        """The parameters hashed into the unit's key. ``vectors`` is left out when unused, so units
        planned before it existed keep their keys (and their finished work)."""
        d = self.model_dump()
        if d["vectors"] is None:
            del d["vectors"]
        return d
