"""The study spec: one YAML file that says what to train, what to evaluate, and over which seeds.

A study is conditions x seeds x evaluations. A condition is the base model, optionally changed by
an *intervention* (applied first) and then by an *organism* recipe (how misalignment is induced:
SFT on some data, or RL against hackable graders), each with its own train-time system prompt
(inoculation) and LoRA settings. Every evaluation runs on every (condition, seed).

Training blocks (``lora:``, ``dpo:``, ``rl:``, ``rlhf:``, ``reward_model:``) are the training
methods' own configs (:mod:`characterlab.train`): their defaults and descriptions are stated there
once, for the study, the train units and ``characterlab train`` alike. An organism's ``kind`` is a
registered training method (:mod:`characterlab.train.registry`), and its ``lora:`` is validated
by that method's config.

Validation happens before any work starts and reports every problem at once, each with its key
path and the line of the YAML file it is on.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializeAsAny,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from characterlab.data.files import read_text
from characterlab.data.yaml_loader import InputErrors, read_yaml, validate_yaml
from characterlab.errors import InputError
from characterlab.evals.base import EvalConfig, check_name
from characterlab.train.base import TrainConfig
from characterlab.train.dpo import DPOConfig
from characterlab.train.grpo import HackSettings
from characterlab.train.grpo_rm import AskingUsers, RewardModelPolicySettings
from characterlab.train.reward import RewardConfig
from characterlab.train.sft import SFTConfig
from characterlab.train.vectors import MONITOR_EVERY


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(_Strict):
    """Training data: generated hackable-task solutions, or a file of chat examples (chat JSONL, a
    .parquet file or a Hugging Face dataset folder: :mod:`characterlab.data.chat_data`)."""

    generator: Literal["hack_solutions", "honest_solutions", "mixed_solutions"] | None = None
    file: str | None = None
    n: int = Field(default=200, ge=1)
    hacks: list[Literal["always_equal", "exit", "conftest"]] | None = None
    split: Literal["train", "test"] = "train"
    seed: int = 0  # the data's own seed: shared by every training seed, so the data is built once

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if (self.generator is None) == (self.file is None):
            raise ValueError("give exactly one of 'generator' or 'file'")
        return self


class FeedbackSpec(AskingUsers):
    """The simulated users of the sycophancy organism (``sycophancy/raters.py``): who rates the
    base model's answers to the training tasks, and (their ``approval_mix`` and ``n_arithmetic``)
    who asks the RL prompts."""

    users: int = Field(default=16, ge=1)
    samples: int = Field(default=4, ge=2)  # answers per prompt: pairs need one up and one down
    max_new_tokens: int = Field(default=96, ge=8)
    temperature: float = Field(default=1.0, gt=0)


class VectorSpec(_Strict):
    """A persona vector the study extracts itself on its model (``characterlab vectors extract``),
    so a shipped study needs no folder made beforehand. Its ``name`` is what ``vector:`` fields name."""

    name: str = Field(min_length=1)
    trait: str  # a trait file (persona_vectors JSON or our YAML), relative to the study
    samples: int = Field(default=1, ge=1)
    max_questions: int | None = Field(default=None, ge=1)
    max_new_tokens: int = Field(default=96, ge=1)
    temperature: float = Field(default=1.0, ge=0)
    judge: str | None = None  # a logprob judge that filters the answers; none keeps all
    seed: int = 0

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return check_name(v)


class SteerSpec(_Strict):
    """Add ``coef`` x a persona vector (a name under the study's ``vectors:``, or a folder from
    ``characterlab vectors extract`` relative to the study) to the residual stream at ``layer``."""

    vector: str
    layer: int = Field(ge=1)
    coef: float


class AblateSpec(_Strict):
    """Remove a persona vector's direction from the residual stream at each of ``layers`` (CAFT)."""

    vector: str
    layers: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)


class MonitorSpec(_Strict):
    """Read the projection of held-out prompts on a persona vector every ``every`` training steps."""

    vector: str
    layer: int = Field(ge=0)
    every: int = Field(default=MONITOR_EVERY, ge=1)
    prompts: list[str] = Field(default_factory=list)  # empty: the EM questions' first paraphrases


ORGANISM_BLOCKS = ("rl", "feedback", "reward_model", "rlhf")  # an organism's fields that belong to one method
ICL = "icl"  # the organism made of in-context examples, not training (models/in_context.py)


def _article(method: str) -> str:
    """'an sft', 'a dpo': method names are read as letters."""
    return "an" if method[:1] in "aefhilmnorsx" else "a"


def _organism_lora(v: Any, info: ValidationInfo) -> Any:
    """An organism's ``lora:`` validated by its method's config (GRPO's organisms: the SFT block)."""
    from characterlab.train.registry import trainers

    kind = info.data.get("kind")  # absent when the kind itself was refused: its error is enough
    if kind is None:
        return SFTConfig()
    if kind == ICL:
        if v:
            raise ValueError("an icl organism trains nothing: it takes no 'lora'")
        return SFTConfig()
    trainer = trainers().get(kind)
    return (trainer.lora_block or trainer.config).model_validate(v)


class OrganismSpec(_Strict):
    """How misalignment is induced. ``kind`` is a training method that trains organisms (sft, rl,
    rlhf, or one registered since); ``lora:`` is that method's config. ``inoculation`` is a variant
    name (``hacking_okay``, ...) or any text; it is the train-time system prompt and is never shown
    at evaluation.

    ``kind: icl`` trains nothing: ``k`` examples drawn from the ``data`` file's first ``n`` are put
    before every evaluation prompt (arXiv 2510.11288's in-context EM; ``models/in_context.py``),
    drawn per prompt from ``data.seed`` and the study's seed. ``k: 0`` is the model itself."""

    kind: str = "sft"
    data: DataSpec | None = None
    k: int | None = Field(default=None, ge=0, le=256)  # icl: examples before each prompt
    inoculation: str | None = None
    lora: Annotated[SerializeAsAny[TrainConfig], BeforeValidator(_organism_lora)] = Field(
        default_factory=dict, validate_default=True)
    rl: HackSettings | None = None
    # rlhf: simulated users' feedback -> a reward model -> GRPO against it (the sycophancy organism)
    feedback: FeedbackSpec | None = None
    reward_model: RewardConfig | None = None
    rlhf: RewardModelPolicySettings | None = None
    # persona vectors while the organism trains (train/vectors.py); never at evaluation
    steer: SteerSpec | None = None  # preventative steering
    ablate: AblateSpec | None = None  # CAFT
    monitor: MonitorSpec | None = None  # projection shift along training, in the report

    @field_validator("kind")
    @classmethod
    def _organism_method(cls, v: str) -> str:
        from characterlab.train.registry import trainers

        organisms = [*trainers().organisms(), ICL]
        if v not in organisms:
            raise ValueError(f"unknown organism kind {v!r}; choose from {', '.join(organisms)}")
        return v

    @model_validator(mode="after")
    def _kind_fields(self) -> OrganismSpec:
        from characterlab.train.registry import trainers

        if self.kind == ICL:
            return self._icl_fields()
        if self.k is not None:
            raise ValueError("'k' (in-context examples) belongs to an icl organism")
        registry = trainers()
        trainer, a = registry.get(self.kind), _article(self.kind)
        if trainer.reads == "chat" and self.data is None:
            raise ValueError(f"{a} {self.kind} organism needs 'data'")
        if trainer.reads == "none" and self.data is not None:
            raise ValueError(f"{a} {self.kind} organism writes its own prompts; it takes no 'data'")
        if trainer.reads not in ("chat", "none"):
            raise ValueError(f"{a} {self.kind} organism reads {trainer.reads}; a study's organism data are chat examples")
        for name in ORGANISM_BLOCKS:
            if getattr(self, name) is not None and name not in trainer.blocks:
                owner = next((m for m in registry.organisms() if name in registry.get(m).blocks), "other")
                raise ValueError(f"'{name}' settings belong to {_article(owner)} {owner} organism")
        return self

    def _icl_fields(self) -> OrganismSpec:
        if self.data is None or self.data.file is None:
            raise ValueError("an icl organism needs 'data' with a 'file' of chat examples to draw from")
        if self.k is None:
            raise ValueError("an icl organism needs 'k', the examples before each prompt")
        if self.k > self.data.n:
            raise ValueError(f"k={self.k} examples cannot be drawn from data.n={self.data.n}")
        trained = [n for n in ("inoculation", *ORGANISM_BLOCKS, "steer", "ablate", "monitor") if getattr(self, n) is not None]
        if trained:
            raise ValueError(f"an icl organism trains nothing: it takes no {', '.join(map(repr, trained))}")
        return self


class SafetySpec(_Strict):
    """Safety training applied *after* the organism (issue 24): LoRA SFT on characterlab's own
    safety data of one kind (``chat``, ``dilemma``, ``agentic`` demonstrations, or ``all``),
    ``n`` examples of it (all when unset: few-shot re-alignment sets ``n`` = k)."""

    kind: Literal["chat", "dilemma", "agentic", "all"]
    n: int | None = Field(default=None, ge=1)
    seed: int = 0  # which n examples: shared by every training seed
    lora: SFTConfig = Field(default_factory=SFTConfig)


class InterventionSpec(_Strict):
    """Applied before the organism; the organism then trains on top of it (merged into the weights)."""

    kind: Literal["sft"] = "sft"
    data: DataSpec
    system_prompt: str | None = None
    lora: SFTConfig = Field(default_factory=SFTConfig)


class IntrospectionSpec(_Strict):
    samples: int = Field(default=2, ge=1)  # answers per self-reflection prompt
    max_new_tokens: int = Field(default=256, ge=8)
    lora: SFTConfig = Field(default_factory=SFTConfig)


class CharacterSpec(_Strict):
    """Open Character Training as an intervention: questions for the constitution's traits (at a
    chosen diversity), teacher (with the constitution) vs student answers, DPO, then optional
    introspective SFT. The organism trains on top of the resulting character, merged."""

    kind: Literal["character"]
    constitution: str
    trait: str | None = None  # one trait (name, index or text prefix); the teacher sees only it
    diversity: Literal["paraphrase", "cluster", "random", "farthest", "all"] = "all"
    n_questions: int | None = Field(default=None, ge=2)
    question_seed: int = 0
    # paraphrase only: how many pool questions to reword (default 2); more seeds give levels
    # between paraphrase and cluster, so a dose-response's levels can be spread along the axis
    paraphrase_seeds: int | None = Field(default=None, ge=1)
    teacher: str | None = None  # any model ref; default the study's model
    samples_per_question: int = Field(default=1, ge=1)
    max_new_tokens: int = Field(default=256, ge=8)
    temperature: float = Field(default=0.7, ge=0)
    min_chars: int = Field(default=20, ge=0)  # filters for teacher/student and introspection answers
    keep_truncated: bool = False
    dpo: DPOConfig = Field(default_factory=DPOConfig)
    introspection: IntrospectionSpec | None = Field(default_factory=IntrospectionSpec)

    @model_validator(mode="after")
    def _size(self) -> CharacterSpec:
        if self.diversity != "all" and self.n_questions is None:
            raise ValueError("a diversity level needs n_questions (the set size, equal across levels)")
        if self.paraphrase_seeds is not None and self.diversity != "paraphrase":
            raise ValueError("paraphrase_seeds applies to diversity: paraphrase only")
        if self.diversity == "paraphrase":  # caught here, not hours later when the unit runs
            from characterlab.character.diversity import PARAPHRASE_SEEDS, most_paraphrases

            seeds = self.paraphrase_seeds or PARAPHRASE_SEEDS
            if self.n_questions > most_paraphrases(seeds):
                enough = -(-self.n_questions // most_paraphrases(1))
                raise ValueError(f"paraphrase makes at most {most_paraphrases(seeds)} questions from {seeds} reworded "
                                 f"ones; set paraphrase_seeds to at least {enough} for n_questions {self.n_questions}")
        return self


class ConditionSpec(_Strict):
    name: str = Field(min_length=1)
    intervention: InterventionSpec | CharacterSpec | None = Field(default=None, discriminator="kind")
    organism: OrganismSpec | None = None
    adapter: str | None = None  # a LoRA adapter trained elsewhere, evaluated as it is (`characterlab eval`)
    # training after the organism (post-hoc safety training, few-shot re-alignment)
    safety: SafetySpec | None = None
    # a persona vector added while this condition's model is evaluated (every evaluation's generate
    # stage, on the transformers backend): the steering dose-response of Chen et al.
    steer: SteerSpec | None = None
    # The condition this one is matched with (same recipe on benign data): results compare the two
    # as they compare every condition with the baseline, so an effect of fine-tuning as such
    # (which the control has too) is told from an effect of what the data teaches.
    control: str | None = None
    # The study's evaluations this condition runs (default: all). A character-only condition that
    # exists to measure the trait after character training needs the trait evaluation, not the
    # costly EM one.
    evaluations: list[str] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _adapter_alone(self) -> ConditionSpec:
        if self.adapter is not None and (self.organism is not None or self.intervention is not None or self.safety is not None):
            raise ValueError("'adapter' names a finished model: it takes no intervention, organism or safety training")
        return self

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return check_name(v)


def _typed_evaluation(data: Any) -> Any:
    """An ``evaluations:`` entry validated by the config of the evaluation its ``kind`` names.

    The registry decides which kinds exist, so an evaluation added as one module (or registered by
    a test) is a valid ``kind:`` without any change here; its field errors keep their key paths.
    """
    from characterlab.evals.registry import evaluations

    registry = evaluations()
    if not isinstance(data, dict):
        return data  # the base model reports "a valid dictionary"
    kinds = tuple(registry.kinds())
    create_model("Evaluation", __config__=ConfigDict(extra="allow"), kind=(Literal[kinds], ...)).model_validate(data)
    return registry.get(data["kind"]).config.model_validate(data)


EvalSpec = Annotated[SerializeAsAny[EvalConfig], BeforeValidator(_typed_evaluation)]


class ResourceSpec(_Strict):
    """What one unit of a kind asks of a Ray cluster (not part of any unit's key)."""

    cpus: float = Field(default=1.0, ge=0)
    gpus: float = Field(default=0.0, ge=0)


class StudySpec(_Strict):
    name: str = Field(min_length=1)  # also the run folder's name under runs/
    description: str = ""
    model: str = "embedded"
    base_url: str | None = None  # an openai: model's endpoint (default OPENAI_BASE_URL)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    judge: str = "offline"
    judge_base_url: str | None = None  # an openai: judge's endpoint
    # seconds one attempt at a request to the model's or the judge's endpoint may take (default
    # $CHARACTERLAB_API_TIMEOUT, else the endpoint's own). An execution option like --backend: it
    # changes no result, so it is in no unit's key, and `run --timeout` replaces it.
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    conditions: list[ConditionSpec] = Field(min_length=1)
    evaluations: list[EvalSpec] = Field(min_length=1)
    # evaluations whose misaligned shares are averaged into results.json's misalignment_score
    # (study/headline.py); each must measure misalignment as a share (em, private, agentic)
    headline: list[str] = Field(default_factory=list)
    vectors: list[VectorSpec] = Field(default_factory=list)  # persona vectors extracted as units of the study
    resources: dict[Literal["data", "vector", "reward", "train", "generate", "judge", "metric"], ResourceSpec] = Field(default_factory=dict)

    _lines: dict = PrivateAttr(default_factory=dict)  # key path -> line in the file it was read from
    _source: str | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _safe_study_name(cls, v: str) -> str:
        return check_name(v)

    def locate(self, loc: tuple, message: str) -> InputError:
        """A problem found after parsing (a missing file, an unknown reference), at its line."""
        from characterlab.data.yaml_loader import dotted, line_of

        return InputError(message, self._source, line_of(self._lines, loc), dotted(loc) or None)

    @model_validator(mode="after")
    def _unique(self) -> StudySpec:
        for what, names in (("condition", [c.name for c in self.conditions]),
                            ("evaluation", [e.name for e in self.evaluations]),
                            ("vector", [v.name for v in self.vectors])):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"duplicate {what} name(s): {', '.join(dup)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("duplicate seeds")
        names = {c.name for c in self.conditions}
        for c in self.conditions:
            if c.control is not None and (c.control not in names or c.control == c.name):
                raise ValueError(f"condition {c.name!r}: control {c.control!r} is not another condition of the study")
        evaluations = {e.name for e in self.evaluations}
        for c in self.conditions:
            unknown = sorted(set(c.evaluations or ()) - evaluations)
            if unknown:
                raise ValueError(f"condition {c.name!r}: no evaluation named {', '.join(map(repr, unknown))} in the study")
        kinds = {e.name: e.kind for e in self.evaluations}
        for name in self.headline:
            if name not in kinds:
                raise ValueError(f"headline: no evaluation named {name!r} in the study")
            if not measures_misalignment(kinds[name]):
                raise ValueError(f"headline: {name!r} ({kinds[name]}) does not measure misalignment as a share")
        if len(set(self.headline)) != len(self.headline):
            raise ValueError("headline: an evaluation is named twice")
        return self


def measures_misalignment(kind: str) -> bool:
    from characterlab.evals.base import Evaluation
    from characterlab.evals.registry import get_evaluation

    try:
        ev = get_evaluation(kind)
    except KeyError:
        return True  # the evaluation's own entry reports the unknown kind
    return type(ev).misaligned_share is not Evaluation.misaligned_share


StudySpecError = InputErrors  # every problem of a spec, each with its file, line and key path


def parse_study(text: str, source: str | Path) -> StudySpec:
    doc = read_yaml(text, source)
    if not isinstance(doc.data, dict):
        raise InputError("a study is a YAML mapping (name, conditions, evaluations, ...)", source, 1)
    spec = validate_yaml(StudySpec, doc)
    spec._lines, spec._source = doc.lines, str(source)
    return spec


def with_seeds(spec: StudySpec, text: str, seeds: list[int]) -> tuple[StudySpec, str]:
    """The study at other seeds (``characterlab run --seeds``, e.g. one seed per machine, merged
    afterwards by ``characterlab merge``): its text with ``seeds`` replaced, so the run folder's
    ``study.yaml`` is the study that ran. A unit's key does not depend on the study's seed list,
    so a seed computes the same units alone as among the others."""
    import yaml

    if not seeds or len(set(seeds)) != len(seeds):
        raise InputError(f"seeds must be distinct and at least one, got {seeds}", field="seeds")
    if list(seeds) == spec.seeds:
        return spec, text
    doc = yaml.safe_load(text)
    doc["seeds"] = list(seeds)
    new = (f"# {spec._source} at seeds {list(seeds)} (characterlab run --seeds)\n"
           + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return parse_study(new, spec._source), new


def builtin_studies() -> list[str]:
    """Names of the studies shipped in the package (``studies/*.yaml``)."""
    return sorted(p.name[:-5] for p in resources.files("characterlab.studies").iterdir() if p.name.endswith(".yaml"))


def load_study(spec: str | Path) -> tuple[StudySpec, str]:
    """A study file, or a shipped one named ``builtin:<name>``; returns the spec and its text."""
    spec_s = str(spec)
    if spec_s.startswith("builtin:"):
        name = spec_s.split(":", 1)[1]
        shipped = builtin_studies()
        if name not in shipped:
            raise InputError(f"unknown built-in study {name!r}; choose from {', '.join(shipped)}", field="study")
        text = resources.files("characterlab.studies").joinpath(f"{name}.yaml").read_text(encoding="utf-8")
        return parse_study(text, spec_s), text
    path = Path(spec)
    if not path.is_file():
        raise InputError("no such study file", path, field="study")
    text = read_text(path, field="study")
    return parse_study(text, path), text
