"""Running one unit: a pure function of its parameters and the outputs of the units it reads.

A unit never touches the run folder: it reads its inputs (:class:`DepView`) and returns a
:class:`~characterlab.study.store.UnitOutput` (result, rows, files), which the executor commits.
That is what lets the same code run in-process (local executor) or as a Ray task on another
machine (the Ray executor ships inputs and outputs by value).

``data`` units dispatch on their source (:mod:`characterlab.study.params`), ``train`` units on
their method (its registered trainer, :mod:`characterlab.train.registry`), and ``generate`` / ``judge`` / ``metric`` units on their evaluation, looked up in
the registry (:mod:`characterlab.evals.registry`) by the ``task`` their parameters name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from characterlab.data.records import ChatExample
from characterlab.errors import InputError
from characterlab.evals.registry import get_evaluation
from characterlab.study.params import (
    CharacterQuestionsData,
    DPOPairsData,
    FileData,
    IntrospectionData,
    SolutionsData,
    TrainParams,
)
from characterlab.study.plan import Unit
from characterlab.study.store import UnitOutput


@dataclass
class DepView:
    """A finished unit as its dependants see it; ``files_dir`` holds its files (an adapter)."""

    kind: str
    params: dict
    result: dict
    rows: list[dict]
    files_dir: Path | None


def _read_folder(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _adapter_chain(unit: Unit, deps: dict[str, DepView]) -> list[Path]:
    """The adapters of the train units this unit reads, in training order."""
    chain: list[Path] = []
    for k in unit.deps:
        d = deps[k]
        if d.kind == "train":
            if d.files_dir is None:
                raise RuntimeError(f"train unit {k} has no adapter files")
            chain.append(d.files_dir)
    return chain


def _data_rows(deps: dict[str, DepView]) -> list[dict]:
    [data] = [d for d in deps.values() if d.kind == "data"]
    return data.rows


# -- data sources ------------------------------------------------------------------------------

def _examples_output(examples: list[ChatExample]) -> UnitOutput:
    from characterlab.data.chat_jsonl import hash_examples

    rows = [{"messages": e.to_dicts()} for e in examples]
    return UnitOutput(result={"n_examples": len(rows), "examples_hash": hash_examples(examples)}, rows=rows)


def _file_data(unit: Unit, deps: dict[str, DepView]) -> UnitOutput:
    from characterlab.data.chat_data import chat_data_hash, read_chat_data

    p = FileData.model_validate(unit.params)
    if chat_data_hash(p.file) != p.sha256:
        raise InputError("the data file changed after the study was planned; run again to re-plan", p.file,
                         field="data.file")
    return _examples_output(read_chat_data(p.file, max_examples=p.n))


def _solutions_data(unit: Unit, deps: dict[str, DepView]) -> UnitOutput:
    from characterlab.envs.dataset import HACK_NAMES, build_examples

    p = SolutionsData.model_validate(unit.params)
    kind = p.generator.removesuffix("_solutions")  # hack | honest | mixed
    return _examples_output(build_examples(kind, p.n, split=p.split, hacks=tuple(p.hacks or HACK_NAMES), seed=p.seed))


def _character_questions(unit: Unit, deps: dict[str, DepView]) -> UnitOutput:
    from characterlab.character.constitution import load_checked_constitution
    from characterlab.character.diversity import PARAPHRASE_SEEDS, diversity, select_questions
    from characterlab.models.embeddings import SentenceEncoder

    p = CharacterQuestionsData.model_validate(unit.params)
    c = load_checked_constitution(p.constitution, p.trait)
    pool = [q for t in c.traits for q in t.all_questions]
    enc = SentenceEncoder()
    chosen = pool if p.level == "all" else select_questions(pool, p.size, p.level, enc, seed=p.seed,
                                                            n_seed_questions=p.paraphrase_seeds or PARAPHRASE_SEEDS)
    return UnitOutput(result={"n_questions": len(chosen), "pool": len(pool), "level": p.level, **(
                              {"paraphrase_seeds": p.paraphrase_seeds} if p.paraphrase_seeds else {}),
                              "diversity": diversity(chosen, enc).to_dict()}, rows=[{"question": q} for q in chosen])


def _dpo_pairs(unit: Unit, deps: dict[str, DepView]) -> UnitOutput:
    from characterlab.character.constitution import load_checked_constitution
    from characterlab.character.distill import DistillConfig, distill_pairs

    p = DPOPairsData.model_validate(unit.params)
    c = load_checked_constitution(p.constitution, p.trait)
    cfg = DistillConfig(teacher=p.teacher, student=p.student, samples_per_question=p.samples,
                        max_new_tokens=p.max_new_tokens, temperature=p.temperature, seed=p.seed,
                        min_chars=p.min_chars, keep_truncated=p.keep_truncated)
    pairs, stats = distill_pairs(c, [r["question"] for r in _data_rows(deps)], cfg)
    return UnitOutput(result={**stats, "teacher_system_prompt": c.system_prompt()}, rows=pairs)


def _introspection(unit: Unit, deps: dict[str, DepView]) -> UnitOutput:
    from characterlab.character.distill import introspection_examples

    p = IntrospectionData.model_validate(unit.params)
    chain = _adapter_chain(unit, deps)
    rows, stats = introspection_examples(p.model, chain[-1], chain[:-1], p.samples, p.seed,
                                         max_new_tokens=p.max_new_tokens, min_chars=p.min_chars,
                                         keep_truncated=p.keep_truncated)
    return UnitOutput(result=stats, rows=rows)


def _safety_data(unit: Unit, deps: dict[str, DepView]) -> UnitOutput:
    """characterlab's safety data (safety/), with the diversity of its requests measured the way
    character questions are (embedding spread, character/diversity.py)."""
    from characterlab.character.diversity import diversity
    from characterlab.data.chat_jsonl import hash_examples
    from characterlab.models.embeddings import SentenceEncoder
    from characterlab.safety.data import all_examples, first_user_prompt, safety_examples
    from characterlab.study.params import SafetyData

    p = SafetyData.model_validate(unit.params)
    if hash_examples(all_examples(p.kind)) != p.content_sha256:
        raise InputError("characterlab's safety data changed after the study was planned; run again to re-plan",
                         field="safety")
    examples = safety_examples(p.kind, p.n, p.seed)
    out = _examples_output(examples)
    prompts = [first_user_prompt(e) for e in examples]
    out.result.update(kind=p.kind, diversity=diversity(prompts, SentenceEncoder()).to_dict() if len(prompts) > 1 else None)
    return out


def _feedback_data(unit: Unit, deps: dict[str, DepView]) -> UnitOutput:
    """The model's answers to the training tasks, rated by the simulated users."""
    from characterlab.models.generation import load_generator
    from characterlab.models.refs import parse_model_ref
    from characterlab.study.params import FeedbackData
    from characterlab.sycophancy.collect import collect_feedback

    p = FeedbackData.model_validate(unit.params)
    rows = collect_feedback(load_generator(parse_model_ref(p.model)), n_users=p.users, approval_mix=p.approval_mix,
                            samples=p.samples, n_arithmetic=p.n_arithmetic, seed=p.seed,
                            max_new_tokens=p.max_new_tokens, temperature=p.temperature)
    n = len(rows)
    return UnitOutput(result={"n_rated": n, "thumbs_up": sum(r["rating"] for r in rows),
                              "correct": sum(r["correct"] for r in rows), "agrees": sum(r["agrees"] for r in rows)},
                      rows=rows)


DATA_SOURCES: dict[str, Callable[[Unit, dict[str, DepView]], UnitOutput]] = {
    "file": _file_data, "hack_solutions": _solutions_data, "honest_solutions": _solutions_data,
    "mixed_solutions": _solutions_data, "character_questions": _character_questions, "dpo_pairs": _dpo_pairs,
    "introspection": _introspection, "safety": _safety_data, "feedback": _feedback_data,
}


def run_data(unit: Unit, deps: dict[str, DepView]) -> UnitOutput:
    return DATA_SOURCES[unit.params["generator"]](unit, deps)


# -- trainers ----------------------------------------------------------------------------------

def run_train(unit: Unit, deps: dict[str, DepView], workdir: Path, progress: bool) -> UnitOutput:
    """Train by the unit's method (its registered trainer: :mod:`characterlab.train.registry`) on
    what the unit reads - its data unit's rows, the chain's adapters, the persona vectors, a reward
    model; its metadata is stored as JSON can hold it (a diverged loss is null:
    :func:`~characterlab.train.base.meta_for_json`)."""
    from characterlab.train.base import TrainRun, meta_for_json

    p = TrainParams.model_validate(unit.params)
    chain = [str(a) for a in _adapter_chain(unit, deps)]
    reward = [str(d.files_dir) for d in deps.values() if d.kind == "reward"]
    run = TrainRun(model=p.model, adapter=chain[-1] if chain else None, merged_adapters=chain[:-1], seed=p.seed,
                   system_prompt=p.system_prompt, reward_model=reward[0] if reward else None,
                   **_training_vectors(p, deps))
    rows = _data_rows(deps) if any(d.kind == "data" for d in deps.values()) else []
    out = workdir / "adapter"
    meta = p.trainer().train(p.train_config(), run, rows, out, progress)
    base_units = [k for k in unit.deps if deps[k].kind == "train"]
    # where the files were is a temp folder: record the units the adapter was stacked on instead
    meta["stacking"] = {"mode": "merged", "base_units": base_units} if base_units else None
    if isinstance(meta.get("data"), dict):
        meta["data"].pop("path", None)
    meta.pop("model_path", None)
    if isinstance(meta.get("run"), dict):  # folders of this run, not what decided the result
        for name in ("adapter", "merged_adapters", "reward_model"):
            meta["run"].pop(name, None)
    return UnitOutput(result=meta_for_json(meta), files=_read_folder(out))


def run_reward(unit: Unit, deps: dict[str, DepView], workdir: Path, progress: bool) -> UnitOutput:
    """A reward model from the feedback unit's rows: trained on most prompts, measured on the rest
    (the raters' labels, and the truth)."""
    from characterlab.study.params import RewardParams
    from characterlab.train.base import TrainRun, meta_for_json
    from characterlab.train.reward import train_reward_on_feedback

    p = RewardParams.model_validate(unit.params)
    out = workdir / "reward_model"
    meta = train_reward_on_feedback(p.train_config(), TrainRun(model=p.model, seed=p.seed), _data_rows(deps), out,
                                    progress=progress)
    return UnitOutput(result=meta_for_json(meta), files=_read_folder(out))


# -- evaluation stages -------------------------------------------------------------------------

def _model_ref(unit: Unit, deps: dict[str, DepView]):
    from characterlab.models.refs import parse_model_ref

    p = unit.params
    chain = _adapter_chain(unit, deps)
    if "adapter" in p:  # an adapter trained elsewhere (checked against its hash)
        from characterlab.data.files import sha256_folder

        if sha256_folder(p["adapter"]["path"]) != p["adapter"]["sha256"]:
            raise InputError("the adapter changed after the study was planned; run again to re-plan",
                             p["adapter"]["path"], field="adapter")
        chain = [Path(p["adapter"]["path"])]
    return parse_model_ref(p["model"], adapter=chain[-1] if chain else None, merged_adapters=tuple(chain[:-1]),
                           base_url=p.get("base_url"))


def run_generate(unit: Unit, deps: dict[str, DepView], progress: bool, backend: str = "auto",
                 timeout: float | None = None) -> UnitOutput:
    """The evaluation's answers; ``timeout`` (seconds an attempt at an endpoint may take) goes to the
    generator, not into the unit's key: it changes no answer."""
    from characterlab.models.generation import load_generator

    evaluation = get_evaluation(unit.params["task"])
    params = dict(unit.params)
    if isinstance(params.get("vector"), dict):  # resolved once here: the study's unit, or a folder checked unchanged
        params["vector"] = {"path": _vector_path(params["vector"], deps, "vector")}
    steer = params.get("steering")
    generator = load_generator(_model_ref(unit, deps), progress=progress, backend=backend, timeout=timeout,
                               needs_internals=evaluation.needs_internals or steer is not None)
    if params.get("icl"):
        generator = _in_context(generator, params["icl"], params["seed"])
    if steer is None:
        rows = evaluation.generate(params, generator)
    else:
        from characterlab.models.activations import steering
        from characterlab.vectors.files import layer_vector

        v = layer_vector(_vector_path(steer, deps, "steering"), steer["layer"], "steer.layer")
        with steering(generator.local.model, v.vector, v.layer, steer["coef"]):
            rows = evaluation.generate(params, generator)
    return UnitOutput(result={"n": len(rows), "backend": generator.backend}, rows=rows)


def _in_context(generator, icl: dict, seed: int):
    """The generator with an icl organism's examples before every prompt (``models/in_context.py``),
    from the file checked unchanged since planning; the draw's seed is the organism's and the unit's."""
    from characterlab.data.chat_data import chat_data_hash, read_chat_data
    from characterlab.models.in_context import InContextGenerator

    if chat_data_hash(icl["file"]) != icl["sha256"]:
        raise InputError("the icl organism's data changed after the study was planned; run again to re-plan",
                         icl["file"], field="organism.data.file")
    examples = read_chat_data(icl["file"], max_examples=icl["n"])
    return InContextGenerator(generator, examples, icl["k"], seed=(icl["seed"], seed))


def run_vector(unit: Unit, workdir: Path) -> UnitOutput:
    """Extract a persona vector on the study's model; its folder is the unit's files."""
    from characterlab.data.files import sha256_file
    from characterlab.study.params import VectorData
    from characterlab.vectors.persona import ExtractConfig, extract_persona_vector

    p = VectorData.model_validate(unit.params)
    if sha256_file(p.trait["path"]) != p.trait["sha256"]:
        raise InputError("the trait file changed after the study was planned; run again to re-plan", p.trait["path"],
                         field="trait")
    out = workdir / "vector"
    meta = extract_persona_vector(p.trait["path"], out, ExtractConfig(
        model=p.model, samples=p.samples, max_new_tokens=p.max_new_tokens, temperature=p.temperature, judge=p.judge,
        max_questions=p.max_questions, seed=p.seed))
    return UnitOutput(result=meta, files=_read_folder(out))


def _vector_path(option: dict, deps: dict[str, DepView], field: str) -> str:
    """Where a persona vector of a planned unit is: the folder of the study's ``vector`` unit it
    names, or a folder on disk, refused if its files changed since planning."""
    if "unit" in option:
        d = deps[option["unit"]]
        if d.files_dir is None:
            raise RuntimeError(f"vector unit {option['unit']} has no files")
        return str(d.files_dir)
    return _checked_vector(option, field)


def _checked_vector(option: dict, field: str) -> str:
    from characterlab.data.files import sha256_folder

    if sha256_folder(option["path"]) != option["sha256"]:
        raise InputError("the persona vector changed after the study was planned; run again to re-plan",
                         option["path"], field=field)
    return option["path"]


def _training_vectors(p: TrainParams, deps: dict[str, DepView]) -> dict:
    """A train unit's persona-vector options as :class:`~characterlab.train.base.TrainRun` fields
    (train/vectors.py), each vector resolved to its folder."""
    from characterlab.train.vectors import AblateInTraining, MonitorProjection, SteerInTraining

    v = p.vectors
    out: dict = {}
    if v is None:
        return out
    if v.steer:
        out["steer"] = SteerInTraining(_folder(v.steer, deps, "steer"), v.steer.layer, v.steer.coef)
    if v.ablate:
        out["ablate"] = AblateInTraining(_folder(v.ablate, deps, "ablate"), list(v.ablate.layers))
    if v.monitor:
        m = v.monitor
        out["monitor"] = MonitorProjection(_folder(m, deps, "monitor"), m.layer, m.every, list(m.prompts))
    return out


def _folder(ref, deps: dict[str, DepView], field: str) -> str:
    return _vector_path(ref.model_dump(exclude_none=True), deps, field)


def run_judge(unit: Unit, deps: dict[str, DepView], timeout: float | None = None) -> UnitOutput:
    """The evaluation's scores. A ``timeout`` reaches its judge as ``params[ENDPOINT_TIMEOUT]`` (see
    :func:`~characterlab.evals.base.judge_factory`) in a copy of the parameters: the unit's key
    was made from them without it."""
    from characterlab.evals.base import ENDPOINT_TIMEOUT

    [gen] = deps.values()
    params = unit.params if timeout is None else {**unit.params, ENDPOINT_TIMEOUT: timeout}
    rows, result = get_evaluation(unit.params["task"]).score(params, gen.rows, gen.params)
    return UnitOutput(result=result, rows=rows)


def run_metric(unit: Unit, deps: dict[str, DepView]) -> UnitOutput:
    [jud] = deps.values()
    result = get_evaluation(unit.params["task"]).summarise(unit.params, jud.rows)
    if "judge" in jud.result:
        result = {"judge": jud.result.get("judge"), **result}
    return UnitOutput(result=result)


def execute_unit(unit: Unit, deps: dict[str, DepView], workdir: Path, progress: bool = False,
                 backend: str = "auto", timeout: float | None = None) -> UnitOutput:
    """Run ``unit`` given its finished dependencies; ``workdir`` is an empty scratch folder;
    ``backend`` is the generation engine of local models (:mod:`characterlab.models.backend`);
    ``timeout`` the seconds an attempt at a model or judge endpoint may take (None: the default
    of :func:`~characterlab.models.api.endpoint_timeout`). Neither is part of the unit's key. The
    memory the unit freed goes back to the system before the next unit runs (see
    :mod:`characterlab.allocator`)."""
    from characterlab.allocator import release_freed_memory

    try:
        return _execute(unit, deps, workdir, progress, backend, timeout)
    finally:
        release_freed_memory()


def _execute(unit: Unit, deps: dict[str, DepView], workdir: Path, progress: bool, backend: str,
             timeout: float | None) -> UnitOutput:
    if unit.kind == "data":
        return run_data(unit, deps)
    if unit.kind == "vector":
        return run_vector(unit, workdir)
    if unit.kind == "train":
        return run_train(unit, deps, workdir, progress)
    if unit.kind == "reward":
        return run_reward(unit, deps, workdir, progress)
    if unit.kind == "generate":
        return run_generate(unit, deps, progress, backend, timeout)
    if unit.kind == "judge":
        return run_judge(unit, deps, timeout)
    if unit.kind == "metric":
        return run_metric(unit, deps)
    raise ValueError(f"unknown unit kind {unit.kind!r}")
