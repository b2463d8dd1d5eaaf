"""From a study spec to a plan: a graph of units, each keyed by the hash of what decides its result.

Unit kinds, in data-flow order:

* ``data``: build a training set (generated hackable-task solutions, a chat JSONL file, or a
  character's questions, DPO pairs and introspection answers; see :mod:`characterlab.study.params`);
* ``train``: a LoRA adapter trained by a registered method (:mod:`characterlab.train.registry`:
  SFT on a data unit, DPO on a character's pairs, GRPO on hackable tasks or against a reward
  model...), optionally on top of an earlier adapter (merged into the weights first);
* ``generate``, ``judge``, ``metric``: the three stages of a registered evaluation
  (:mod:`characterlab.evals`): sample answers, score them, summarise with 95% CIs.

A key is the hash of the unit's kind, its stage version, its parameters and the keys of the units
it reads. Equal key = equal result, so a unit shared by two conditions (the same data, the base
model's evaluation) is computed once, and a finished unit is never computed again. Stage versions
change when a stage's code changes what it produces.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from characterlab import __version__
from characterlab.data.files import sha256_folder
from characterlab.data.yaml_loader import InputErrors
from characterlab.errors import InputError
from characterlab.evals.base import EvalConfig, EvalStages, PlanContext
from characterlab.evals.registry import get_evaluation
from characterlab.judge.refs import parse_judge_ref
from characterlab.study.params import (
    CharacterQuestionsData,
    DPOPairsData,
    FeedbackData,
    FileData,
    IntrospectionData,
    RewardParams,
    SafetyData,
    SolutionsData,
    TrainParams,
)
from characterlab.study.spec import (
    ICL,
    CharacterSpec,
    ConditionSpec,
    DataSpec,
    FeedbackSpec,
    StudySpec,
)

UnitKind = Literal["data", "vector", "reward", "train", "generate", "judge", "metric"]
STAGE_VERSIONS: dict[str, str] = {"data": "1", "vector": "1", "reward": "1", "train": "1", "generate": "1", "judge": "1",
                                  "metric": "1"}


@dataclass(frozen=True)
class Resources:
    """What a unit needs from an executor (Ray schedules on it)."""

    cpus: float = 1.0
    gpus: float = 0.0


# Defaults for a CPU machine; a study's ``resources:`` overrides them per kind (GPUs on a cluster).
DEFAULT_RESOURCES: dict[str, Resources] = {"data": Resources(1), "vector": Resources(2), "reward": Resources(2),
                                           "train": Resources(2), "generate": Resources(2), "judge": Resources(1),
                                           "metric": Resources(0.25)}


@dataclass(frozen=True)
class Unit:
    key: str
    kind: UnitKind
    params: dict
    deps: tuple[str, ...]
    label: str
    resources: Resources = field(default_factory=Resources)

    def to_dict(self) -> dict:
        return {"key": self.key, "kind": self.kind, "params": self.params, "deps": list(self.deps), "label": self.label}


@dataclass(frozen=True)
class Cell:
    """One (condition, seed, evaluation): which metric unit answers it."""

    condition: str
    seed: int
    evaluation: str
    eval_kind: str
    metric: str  # unit key
    train: str | None  # key of the condition's last train unit, if any


@dataclass
class Plan:
    units: dict[str, Unit]  # in dependency order
    cells: list[Cell]
    labels: dict[str, list[str]]  # key -> every label that asked for it (shared units have several)

    def ordered(self) -> list[Unit]:
        return list(self.units.values())


def unit_key(kind: str, params: dict, deps: tuple[str, ...]) -> str:
    blob = json.dumps({"kind": kind, "version": STAGE_VERSIONS[kind], "params": params, "deps": list(deps)},
                      sort_keys=True, ensure_ascii=False)
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


class _Builder:
    def __init__(self, spec: StudySpec, base_dir: Path):
        self.spec = spec
        self.base_dir = base_dir
        self.units: dict[str, Unit] = {}
        self.labels: dict[str, list[str]] = {}
        self.ctx = PlanContext(model=spec.model, judge=parse_judge_ref(spec.judge, spec.judge_base_url),
                               base_dir=base_dir)

    def add(self, kind: UnitKind, params: dict, deps: tuple[str, ...], label: str) -> str:
        key = unit_key(kind, params, deps)
        if key not in self.units:
            r = self.spec.resources.get(kind)
            resources = Resources(cpus=r.cpus, gpus=r.gpus) if r else DEFAULT_RESOURCES[kind]
            self.units[key] = Unit(key, kind, params, deps, label, resources)
        self.labels.setdefault(key, [])
        if label not in self.labels[key]:
            self.labels[key].append(label)
        return key

    def data(self, d: DataSpec, label: str) -> str:
        if d.file is not None:
            path = (self.base_dir / d.file).resolve()
            if not path.exists():
                raise InputError("no such data file", path, field="data.file")
            from characterlab.data.chat_data import chat_data_hash, read_chat_data

            read_chat_data(path, max_examples=d.n)  # a bad row is reported now, not when its unit runs
            params = FileData(file=str(path), sha256=chat_data_hash(path), n=d.n)
        else:
            params = SolutionsData(generator=d.generator, n=d.n, split=d.split, seed=d.seed,
                                   hacks=sorted(d.hacks) if d.hacks else None)
        return self.add("data", params.model_dump(), (), f"data {label}")

    def train(self, params: TrainParams, deps: tuple[str, ...], label: str) -> str:
        return self.add("train", params.key_params(), deps, label)

    def condition_model(self, c: ConditionSpec, seed: int) -> list[str]:
        """The chain of train units that make this condition's model (empty for the base model).

        Each train unit depends on every earlier one in the chain, in order: it trains on top of all
        of them merged into the weights, and evaluation loads them the same way.
        """
        from characterlab.train.transforms import resolve_inoculation

        chain: list[str] = []
        iv = c.intervention
        if isinstance(iv, CharacterSpec):
            chain = self.character(iv, c.name, seed)
        elif iv is not None:
            data = self.data(iv.data, f"{c.name} intervention")
            params = TrainParams(model=self.spec.model, method="sft", role="intervention",
                                 system_prompt=iv.system_prompt, lora=iv.lora, seed=seed)
            chain.append(self.train(params, (data,), f"train {c.name} intervention seed {seed}"))
        if c.organism is not None and c.organism.kind != ICL:  # icl trains nothing: model_params
            org = c.organism
            system = resolve_inoculation(org.inoculation) if org.inoculation else None
            params = TrainParams(model=self.spec.model, method=org.kind, role="organism", system_prompt=system,
                                 lora=org.lora, seed=seed, rl=org.rl, vectors=self.vector_options(org))
            deps = tuple(chain)
            if org.data is not None:
                deps = (self.data(org.data, c.name),) + deps
            if org.kind == "rlhf":
                params = params.model_copy(update={"rl": self.rlhf_settings(org)})
                deps = (self.reward_model(org, c.name, seed),) + deps
            deps += vector_units(*(params.vectors.model_dump(exclude_none=True) if params.vectors else {}).values())
            chain.append(self.train(params, deps, f"train {c.name} seed {seed}"))
        if c.safety is not None:
            chain.append(self.safety(c.safety, c.name, seed, chain))
        return chain

    def reward_model(self, org, name: str, seed: int) -> str:
        """The rlhf organism's users: their feedback on the base model's answers (a data unit),
        and the reward model learnt from it (a ``reward`` unit, outside the adapter chain)."""
        from characterlab.models.refs import parse_model_ref

        if not parse_model_ref(self.spec.model, base_url=self.spec.base_url).is_local:
            raise InputError("an rlhf organism trains a reward model and a policy: the study's model must be local",
                             field="organism")
        from characterlab.train.reward import RewardConfig

        fb, rm = org.feedback or FeedbackSpec(), org.reward_model or RewardConfig()
        feedback = self.add("data", FeedbackData(model=self.spec.model, seed=seed, **fb.model_dump()).model_dump(), (),
                            f"data {name} feedback seed {seed}")
        return self.add("reward", RewardParams(model=self.spec.model, seed=seed, **rm.all_fields()).key_dict(),
                        (feedback,), f"reward model {name} seed {seed}")

    @staticmethod
    def rlhf_settings(org):
        """The GRPO settings, with the users who ask the prompts (the feedback's population)."""
        from characterlab.train.grpo_rm import RewardModelPolicySettings, RLHFSettings

        fb = org.feedback or FeedbackSpec()
        return RLHFSettings(**(org.rlhf or RewardModelPolicySettings()).all_fields(), approval_mix=fb.approval_mix,
                            n_arithmetic=fb.n_arithmetic)

    def safety(self, s, name: str, seed: int, chain: list[str]) -> str:
        """Safety training after the organism: its data unit, then SFT on top of the whole chain."""
        from characterlab.data.chat_jsonl import hash_examples
        from characterlab.safety.data import all_examples

        data = self.add("data", SafetyData(kind=s.kind, n=s.n, seed=s.seed,
                                           content_sha256=hash_examples(all_examples(s.kind))).model_dump(), (),
                        f"data {name} safety ({s.kind}, n={s.n or 'all'})")
        params = TrainParams(model=self.spec.model, method="sft", role="safety", system_prompt=None,
                             lora=s.lora, seed=seed)
        return self.train(params, (data, *chain), f"train {name} safety seed {seed}")

    def character(self, ch: CharacterSpec, name: str, seed: int) -> list[str]:
        """Questions -> (teacher, student) pairs -> DPO -> introspection data -> SFT."""
        from characterlab.character.constitution import constitution_identity
        from characterlab.models.refs import parse_model_ref

        if ch.teacher:
            parse_model_ref(ch.teacher)
        const = constitution_identity(self.ctx.locate(ch.constitution))
        questions = CharacterQuestionsData(constitution=const, trait=ch.trait, level=ch.diversity, size=ch.n_questions,
                                           seed=ch.question_seed, paraphrase_seeds=ch.paraphrase_seeds)
        # the option is keyed only when set, so the units of runs made before it existed are reused
        q = self.add("data", questions.model_dump(exclude={"paraphrase_seeds"} if ch.paraphrase_seeds is None else None),
                     (), f"data {name} character questions")
        pairs = self.add("data", DPOPairsData(constitution=const, trait=ch.trait, teacher=ch.teacher or self.spec.model,
                                              student=self.spec.model, samples=ch.samples_per_question,
                                              max_new_tokens=ch.max_new_tokens, temperature=ch.temperature,
                                              min_chars=ch.min_chars, keep_truncated=ch.keep_truncated,
                                              seed=seed).model_dump(), (q,), f"data {name} DPO pairs seed {seed}")
        dpo = self.train(TrainParams(model=self.spec.model, method="dpo", role="character", system_prompt=None,
                                     lora=ch.dpo, seed=seed), (pairs,),
                         f"train {name} character DPO seed {seed}")
        chain = [dpo]
        if ch.introspection is not None:
            it = ch.introspection
            intro = self.add("data", IntrospectionData(model=self.spec.model, samples=it.samples,
                                                       max_new_tokens=it.max_new_tokens, min_chars=ch.min_chars,
                                                       keep_truncated=ch.keep_truncated, seed=seed).model_dump(),
                             (dpo,), f"data {name} introspection seed {seed}")
            chain.append(self.train(TrainParams(model=self.spec.model, method="sft", role="character",
                                                system_prompt=None, lora=it.lora, seed=seed),
                                    (intro, dpo), f"train {name} character introspection seed {seed}"))
        return chain

    def plan_vectors(self) -> list[tuple[tuple, InputError]]:
        """A ``vector`` unit per entry of the study's ``vectors:`` (extracted on the study's model);
        their names become what ``vector:`` fields may name. Returns the problems, each at its entry."""
        from dataclasses import replace

        from characterlab.models.refs import parse_model_ref
        from characterlab.study.params import VectorData
        from characterlab.vectors.persona import read_trait_file

        problems, units = [], {}
        for i, v in enumerate(self.spec.vectors):
            try:
                if not parse_model_ref(self.spec.model, base_url=self.spec.base_url).is_local:
                    raise InputError("a persona vector reads a model's activations: the study's model must be local",
                                     field="model")
                path = (self.base_dir / v.trait).resolve()
                trait = read_trait_file(path)  # a bad trait file is reported now, at its own line
                params = VectorData(model=self.spec.model, trait={"path": str(path), "sha256": trait.sha256},
                                    samples=v.samples, max_questions=v.max_questions, max_new_tokens=v.max_new_tokens,
                                    temperature=v.temperature, judge=v.judge, seed=v.seed)
                units[v.name] = self.add("vector", params.model_dump(), (), f"vector {v.name}")
            except InputError as e:
                problems.append((("vectors", i), e))
        self.ctx = replace(self.ctx, vectors=units)
        return problems

    def vector_folder(self, folder: str, loc: str) -> dict:
        """A persona vector named in the study: a ``vectors:`` entry (its unit), or a folder,
        resolved, checked and content-hashed."""
        from characterlab.vectors.files import load_persona_vector

        if folder in self.ctx.vectors:
            return {"unit": self.ctx.vectors[folder], "name": folder}
        path = (self.base_dir / folder).resolve()
        try:
            load_persona_vector(path)
        except InputError as e:
            raise InputError(e.message, e.file, field=loc) from None
        return {"path": str(path), "sha256": sha256_folder(path)}

    def vector_options(self, org) -> dict | None:
        """An organism's persona-vector options as train-unit parameters (None when it has none)."""
        out = {}
        if org.steer:
            out["steer"] = {**self.vector_folder(org.steer.vector, "organism.steer.vector"), "layer": org.steer.layer,
                            "coef": org.steer.coef}
        if org.ablate:
            out["ablate"] = {**self.vector_folder(org.ablate.vector, "organism.ablate.vector"), "layers": org.ablate.layers}
        if org.monitor:
            out["monitor"] = {**self.vector_folder(org.monitor.vector, "organism.monitor.vector"),
                              "layer": org.monitor.layer, "every": org.monitor.every, "prompts": org.monitor.prompts}
        return out or None

    def model_params(self, c: ConditionSpec, chain: list[str]) -> dict:
        """What names the evaluated model: the base, how many trained adapters, an external adapter."""
        model: dict = {"model": self.spec.model, "adapters": len(chain)}
        if self.spec.base_url:
            model["base_url"] = self.spec.base_url
        if c.adapter is not None:
            from characterlab.models.refs import check_adapter_dir

            folder = check_adapter_dir((self.base_dir / c.adapter).resolve())
            model["adapter"] = {"path": str(folder), "sha256": sha256_folder(folder)}
        if c.organism is not None and c.organism.kind == ICL and c.organism.k:
            model["icl"] = self.in_context(c.organism)
        if c.steer is not None:
            from characterlab.models.refs import parse_model_ref

            if not parse_model_ref(self.spec.model, base_url=self.spec.base_url).is_local:
                raise InputError("steering adds to a model's activations: the study's model must be local", field="steer")
            model["steering"] = {**self.vector_folder(c.steer.vector, "steer.vector"), "layer": c.steer.layer,
                                 "coef": c.steer.coef}
        return model

    def in_context(self, org) -> dict:
        """An icl organism's examples as generate-unit parameters: the file (content-hashed, its first
        ``n`` rows checked now), ``k`` and the draw's seed; with the unit's seed they fix every draw."""
        from characterlab.data.chat_data import chat_data_hash, read_chat_data

        path = (self.base_dir / org.data.file).resolve()
        if not path.exists():
            raise InputError("no such data file", path, field="organism.data.file")
        rows = read_chat_data(path, max_examples=org.data.n)
        if len(rows) < org.k:
            raise InputError(f"k={org.k} examples cannot be drawn from the {len(rows)} in the file", path,
                             field="organism.k")
        return {"file": str(path), "sha256": chat_data_hash(path), "n": org.data.n, "k": org.k, "seed": org.data.seed}

    def evaluation(self, e: EvalConfig, stages: EvalStages, model: dict, chain: list[str], seed: int, label: str) -> str:
        """The generate -> judge -> metric units of evaluation ``e`` (its ``stages``) on one model."""
        deps = tuple(chain) + vector_units(model.get("steering")) + stages.generate_deps
        gen = self.add("generate", {**model, **stages.generate, "seed": seed}, deps, f"generate {label}")
        judge_params = dict(stages.judge)
        if self.spec.judge_base_url and "judge_spec" in judge_params:
            judge_params["judge_base_url"] = self.spec.judge_base_url
        jud = self.add("judge", judge_params, (gen,), f"{stages.judge_verb} {label}")
        return self.add("metric", stages.metric, (jud,), f"metric {label}")


def vector_units(*options: dict | None) -> tuple[str, ...]:
    """The ``vector`` units that persona-vector options read (those naming a ``vectors:`` entry)."""
    return tuple(o["unit"] for o in options if o and "unit" in o)


def _problem(spec: StudySpec, loc: tuple, e: InputError) -> InputError:
    """An error met while planning, placed at the study's line; the file it names (if another) kept."""
    where = ""
    if e.file is not None and str(e.file) != spec._source:
        where = f"{e.file}:{e.line}: " if e.line is not None else f"{e.file}: "
    detail = f"{e.field}: " if e.field and (not loc or e.field != loc[-1]) else ""
    problem = spec.locate(loc, f"{where}{detail}{e.message}")
    problem.inner = e  # the error as the file it is about reports it (``eval`` shows that one)
    return problem


def check_references(spec: StudySpec) -> list[InputError]:
    """The study's model and judge references, parsed before anything else."""
    from characterlab.models.refs import parse_model_ref

    problems = []
    for loc, check in ((("model",), lambda: parse_model_ref(spec.model, base_url=spec.base_url)),
                       (("judge",), lambda: parse_judge_ref(spec.judge, spec.judge_base_url))):
        try:
            check()
        except InputError as e:
            problems.append(_problem(spec, loc, e))
    return problems


def build_plan(spec: StudySpec, base_dir: str | Path = ".") -> Plan:
    """Expand conditions x seeds x evaluations into units; shared units appear once.

    Every reference and file the study names is checked here, before any work: all problems are
    reported at once, each at its line of the study file."""
    problems = check_references(spec)
    b = _Builder(spec.model_copy(update={"judge": "offline"}) if problems else spec, Path(base_dir))
    cells: list[Cell] = []
    problems += [_problem(spec, loc, e) for loc, e in b.plan_vectors()]
    stages: dict[int, EvalStages] = {}
    for i, e in enumerate(spec.evaluations):  # each evaluation's files read and hashed once, whatever the conditions
        try:
            stages[i] = get_evaluation(e.kind).stages(e, b.ctx)
        except InputError as err:
            problems.append(_problem(spec, ("evaluations", i), err))
    for seed in spec.seeds:
        for j, c in enumerate(spec.conditions):
            try:
                chain = b.condition_model(c, seed)
                model = b.model_params(c, chain)
            except InputError as e:
                problems.append(_problem(spec, ("conditions", j), e))
                continue
            for i, e in enumerate(spec.evaluations):
                if i not in stages or (c.evaluations is not None and e.name not in c.evaluations):
                    continue
                if "icl" in model and not get_evaluation(e.kind).chat_prompts(e):
                    problems.append(_problem(spec, ("conditions", j), InputError(
                        f"an icl organism puts its examples before chat prompts; the {e.kind} evaluation "
                        f"{e.name!r} does not ask through them (list the others in this condition's evaluations:)",
                        field="organism")))
                    continue
                metric = b.evaluation(e, stages[i], model, chain, seed, f"{c.name} / {e.name} / seed {seed}")
                cells.append(Cell(c.name, seed, e.name, e.kind, metric, chain[-1] if chain else None))
    if problems:
        unique = list({str(p): p for p in problems}.values())  # each seed meets the same problem
        raise InputErrors(unique)
    return Plan(units=b.units, cells=cells, labels=b.labels)


def code_version() -> str:
    """Package version plus the git commit when running from a checkout (metadata only, not keys)."""
    import subprocess

    root = Path(__file__).resolve().parents[3]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev, dirty = "", ""
    return __version__ + (f"+g{rev}" + (".dirty" if dirty else "") if rev else "")
