"""Typed parameters of ``data`` and ``train`` units.

A unit's parameters are hashed into its key, so they are plain JSON once planned; these models say
what each kind of unit reads, the planner builds them, and :mod:`characterlab.study.units` parses
them back before use (a misspelt key fails loudly instead of reading ``None``). The ``generator``
field tells the data sources apart. Evaluation units carry their evaluation's own parameters
(:mod:`characterlab.evals`). Train and reward units carry their method's config
(:mod:`characterlab.train`), the class a study's block was validated with, hashed as
:meth:`~characterlab.train.base.Settings.key_dict` says so that earlier runs keep their keys.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo, field_serializer, field_validator

from characterlab.train.base import Settings, TrainConfig
from characterlab.train.reward import RewardConfig


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


class RewardParams(RewardConfig):
    """A reward model learnt from a ``feedback`` data unit - a ``reward`` unit, read by the RL
    organism that optimises against it and never part of a condition's adapter chain: the study's
    ``reward_model:`` block, the model and the seed."""

    keyed = RewardConfig.keyed | {"model", "seed"}

    model: str
    seed: int

    def train_config(self) -> RewardConfig:
        return RewardConfig(**{k: v for k, v in self.all_fields().items() if k not in ("model", "seed")})


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


class VectorRef(_Params):
    """A persona vector a train unit reads: a ``vectors:`` entry of the study (its unit and name),
    or a folder (its path and content hash)."""

    unit: str | None = None
    name: str | None = None
    path: str | None = None
    sha256: str | None = None


class SteerParams(VectorRef):
    layer: int
    coef: float


class AblateParams(VectorRef):
    layers: list[int]


class MonitorParams(VectorRef):
    layer: int
    every: int
    prompts: list[str]


class VectorOptions(_Params):
    """A train unit's persona-vector options (train/vectors.py); only those given are hashed."""

    steer: SteerParams | None = None
    ablate: AblateParams | None = None
    monitor: MonitorParams | None = None


def _trainer(info: ValidationInfo):
    from characterlab.train.registry import get_trainer

    method = info.data.get("method")  # absent when the method itself was refused
    return get_trainer(method) if method is not None else None


def _lora_block(v: Any, info: ValidationInfo) -> Any:
    """``lora`` as the method's trainer reads it (:attr:`~characterlab.train.base.Trainer.lora_block`)."""
    trainer = _trainer(info)
    if trainer is None:
        return v if isinstance(v, TrainConfig) else TrainConfig()
    block = trainer.lora_block or trainer.config
    if isinstance(v, block):
        return v
    return block.model_validate(v.model_dump() if isinstance(v, BaseModel) else v)


def _rl_block(v: Any, info: ValidationInfo) -> Any:
    """``rl`` as the method's trainer reads it (:attr:`~characterlab.train.base.Trainer.settings_block`)."""
    trainer = _trainer(info)
    if v is None or trainer is None:
        return v
    if trainer.settings_block is None:
        raise ValueError(f"method {trainer.method!r} takes no 'rl' parameters")
    if isinstance(v, trainer.settings_block):
        return v
    return trainer.settings_block.model_validate(v.model_dump() if isinstance(v, BaseModel) else v)


class TrainParams(_Params):
    """One LoRA adapter: the method (a registered trainer), what it is for, its train-time system
    prompt, the method's settings, and its persona-vector options.

    ``lora`` is the method's config (GRPO's organisms: the SFT block whose adapter fields they read)
    and ``rl`` GRPO's own settings: the layout of the first runs, kept because keys hash it."""

    model: str
    method: str
    role: Literal["organism", "intervention", "character", "safety"]
    system_prompt: str | None
    lora: Annotated[TrainConfig, BeforeValidator(_lora_block)]
    seed: int
    rl: Annotated[Settings | None, BeforeValidator(_rl_block)] = None
    vectors: VectorOptions | None = None

    @field_validator("method")
    @classmethod
    def _registered(cls, v: str) -> str:
        from characterlab.train.registry import trainers

        if v not in trainers().by_method:
            raise ValueError(f"unknown training method {v!r}; choose from {', '.join(trainers().methods())}")
        return v

    @field_serializer("lora", "rl")
    def _keyed(self, block: Settings | None) -> dict | None:
        return None if block is None else block.key_dict()

    @field_serializer("vectors")
    def _given(self, options: VectorOptions | None) -> dict | None:
        return None if options is None else options.model_dump(exclude_none=True)

    def key_params(self) -> dict:
        """The parameters hashed into the unit's key. ``vectors`` is left out when unused, so units
        planned before it existed keep their keys (and their finished work)."""
        d = self.model_dump()
        if d["vectors"] is None:
            del d["vectors"]
        return d

    def trainer(self):
        from characterlab.train.registry import get_trainer

        return get_trainer(self.method)

    def train_config(self) -> TrainConfig:
        """The method's whole config (:meth:`~characterlab.train.base.Trainer.config_of`)."""
        return self.trainer().config_of(self.lora, self.rl)
