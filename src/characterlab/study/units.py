"""Running one unit: a pure function of its parameters and the outputs of the units it reads.

A unit never touches the run folder: it reads its inputs (:class:`DepView`) and returns a
:class:`~characterlab.study.store.UnitOutput` (result, rows, files), which the executor commits.
That is what lets the same code run in-process (local executor) or as a Ray task on another
machine (the Ray executor ships inputs and outputs by value).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from characterlab.errors import InputError
from characterlab.study.plan import Unit, constitution_hash, questions_hash
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


def _examples(rows: list[dict]):
    from characterlab.data.records import ChatExample, Message

    return [ChatExample(tuple(Message(m["role"], m["content"]) for m in r["messages"])) for r in rows]


def _constitution(ident: dict, trait: str | None):
    """The constitution a unit was planned with (content hash checked), narrowed to ``trait``."""
    from characterlab.character.constitution import Constitution, read_constitution

    c = read_constitution(ident["source"])
    if constitution_hash(c) != ident["sha256"]:
        raise InputError("the constitution changed after the study was planned; run again to re-plan",
                         ident["source"], field="constitution")
    if trait is None:
        return c
    return Constitution(name=c.name, traits=[c.trait(trait)], description=c.description, source=c.source)


def run_character_data(unit: Unit, deps: dict[str, DepView]) -> UnitOutput:
    p = unit.params
    if p["generator"] == "character_questions":
        from characterlab.character.diversity import diversity, select_questions
        from characterlab.models.embeddings import SentenceEncoder

        c = _constitution(p["constitution"], p["trait"])
        pool = [q for t in c.traits for q in t.all_questions]
        enc = SentenceEncoder()
        chosen = pool if p["level"] == "all" else select_questions(pool, p["size"], p["level"], enc, seed=p["seed"])
        return UnitOutput(result={"n_questions": len(chosen), "pool": len(pool), "level": p["level"],
                                  "diversity": diversity(chosen, enc).to_dict()}, rows=[{"question": q} for q in chosen])
    if p["generator"] == "dpo_pairs":
        from characterlab.character.distill import DistillConfig, distill_pairs

        [qs] = [d for d in deps.values() if d.kind == "data"]
        c = _constitution(p["constitution"], p["trait"])
        cfg = DistillConfig(teacher=p["teacher"], student=p["student"], samples_per_question=p["samples"],
                            max_new_tokens=p["max_new_tokens"], temperature=p["temperature"], seed=p["seed"],
                            min_chars=p["min_chars"], keep_truncated=p["keep_truncated"])
        pairs, stats = distill_pairs(c, [r["question"] for r in qs.rows], cfg)
        return UnitOutput(result={**stats, "teacher_system_prompt": c.system_prompt()}, rows=pairs)
    from characterlab.character.distill import introspection_examples

    chain = _adapter_chain(unit, deps)
    rows, stats = introspection_examples(p["model"], chain[-1], chain[:-1], p["samples"], p["seed"],
                                         max_new_tokens=p["max_new_tokens"], min_chars=p["min_chars"],
                                         keep_truncated=p["keep_truncated"])
    return UnitOutput(result=stats, rows=rows)


def run_data(unit: Unit, deps: dict[str, DepView]) -> UnitOutput:
    from characterlab.data.chat_jsonl import hash_examples, read_chat_jsonl
    from characterlab.data.files import sha256_file

    p = unit.params
    if p.get("generator") in ("character_questions", "dpo_pairs", "introspection"):
        return run_character_data(unit, deps)
    if "file" in p:
        if sha256_file(p["file"]) != p["sha256"]:
            raise InputError("the data file changed after the study was planned; run again to re-plan",
                             p["file"], field="data.file")
        examples = read_chat_jsonl(p["file"], max_examples=p["n"])
    else:
        from characterlab.envs.dataset import HACK_NAMES, build_examples

        kind = {"hack_solutions": "hack", "honest_solutions": "honest", "mixed_solutions": "mixed"}[p["generator"]]
        examples = build_examples(kind, p["n"], split=p["split"], hacks=tuple(p["hacks"] or HACK_NAMES), seed=p["seed"])
    rows = [{"messages": e.to_dicts()} for e in examples]
    return UnitOutput(result={"n_examples": len(rows), "examples_hash": hash_examples(examples)}, rows=rows)


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


def run_train(unit: Unit, deps: dict[str, DepView], workdir: Path, progress: bool) -> UnitOutput:
    from characterlab.data.chat_jsonl import write_chat_jsonl

    p = unit.params
    chain = [str(a) for a in _adapter_chain(unit, deps)]
    top, merged = (chain[-1], chain[:-1]) if chain else (None, [])
    out = workdir / "adapter"
    lora = p["lora"]
    data = [d for d in deps.values() if d.kind == "data"]
    if p["method"] == "sft":
        from characterlab.train.sft import LoraSFTConfig, train_sft

        data_path = workdir / "train.jsonl"
        write_chat_jsonl(data_path, _examples(data[0].rows))
        cfg = LoraSFTConfig(model=p["model"], adapter=top, merged_adapters=merged, system_prompt=p["system_prompt"],
                            lora_rank=lora["rank"], lora_alpha=lora["alpha"], lr=lora["lr"], epochs=lora["epochs"],
                            batch_size=lora["batch_size"], max_length=lora["max_length"], seed=p["seed"])
        meta = train_sft(cfg, data_path, out, progress=progress).meta
    elif p["method"] == "dpo":
        from characterlab.character.distill import LoraDPOConfig, train_dpo

        cfg = LoraDPOConfig(model=p["model"], adapter=top, merged_adapters=merged, lora_rank=lora["rank"],
                            lora_alpha=lora["alpha"], lr=lora["lr"], beta=lora["beta"], epochs=lora["epochs"],
                            batch_size=lora["batch_size"], max_length=lora["max_length"], seed=p["seed"])
        meta = train_dpo(cfg, data[0].rows, out, progress=progress)
    else:
        from characterlab.train.rl import GRPOHackConfig, train_grpo_hacks

        if merged:
            raise ValueError("RL stacks on at most one earlier adapter")
        rl = p["rl"] or {}
        cfg = GRPOHackConfig(model=p["model"], adapter=top, inoculation=p["system_prompt"] or "none",
                             lora_rank=lora["rank"], lr=lora["lr"], seed=p["seed"], **rl)
        meta = train_grpo_hacks(cfg, out, progress=progress)
    base_units = [k for k in unit.deps if deps[k].kind == "train"]
    # where the files were is a temp folder: record the units the adapter was stacked on instead
    meta["stacking"] = {"mode": "merged", "base_units": base_units} if base_units else None
    if isinstance(meta.get("data"), dict):
        meta["data"].pop("path", None)
    meta.pop("model_path", None)
    return UnitOutput(result=json.loads(json.dumps(meta, default=str)), files=_read_folder(out))


def _model_ref(unit: Unit, deps: dict[str, DepView]):
    from characterlab.models.refs import parse_model_ref

    chain = _adapter_chain(unit, deps)
    return parse_model_ref(unit.params["model"], adapter=chain[-1] if chain else None, merged_adapters=tuple(chain[:-1]))


def run_generate(unit: Unit, deps: dict[str, DepView], progress: bool) -> UnitOutput:
    from characterlab.data.records import SamplingParams
    from characterlab.models.generation import load_generator

    p = unit.params
    params = SamplingParams(max_new_tokens=p["max_new_tokens"], temperature=p["temperature"])
    generator = load_generator(_model_ref(unit, deps), batch_size=48, progress=progress)
    if p["task"] == "em":
        from characterlab.evals.freeform import sample_answers, sort_samples

        questions = _questions(p["questions"])
        pending = [(q, list(range(len(q.paraphrases)))) for q in questions]
        rows = [r for rs in sample_answers(generator, pending, p["samples"], p["seed"], params) for r in rs]
        rows = sort_samples(rows, questions)
        return UnitOutput(result={"n": len(rows)}, rows=rows)
    if p["task"] == "trait":
        from characterlab.data.records import GenerationRequest

        if p["questions"]:
            qs = [x for q in _questions(p["questions"]) for x in q.paraphrases]
        else:
            qs = [q for t in _constitution(p["constitution"], p["trait"]).traits for q in t.questions]
        requests = [GenerationRequest.from_prompt(q, n=p["samples"], seed=p["seed"] * 1_000_003 + i) for i, q in enumerate(qs)]
        rows = [{"question": q, "sample_index": c.sample_index, "answer": c.text}
                for q, cs in zip(qs, generator.generate(requests, params)) for c in cs]
        return UnitOutput(result={"n": len(rows)}, rows=rows)
    from characterlab.envs.tasks import generate_tasks
    from characterlab.evals.hacks import hack_eval_requests

    tasks = generate_tasks(p["n"], seed=p["seed"], split=p["split"])
    items = hack_eval_requests(tasks, 0, p["seed"], None)
    answers = generator.generate([req for _, _, req in items], params)
    rows = [{"task_index": i, "task_id": t.id, "grader": g, "answer": c.text, "n_tokens": c.n_tokens}
            for i, ((t, g, _), [c]) in enumerate(zip(items, answers))]
    return UnitOutput(result={"n": len(rows)}, rows=rows)


def _questions(q: dict):
    from characterlab.data.questions import load_questions

    qs = load_questions(q["source"]).questions
    if questions_hash(qs) != q["sha256"]:
        raise InputError("the question file changed after the study was planned; run again to re-plan",
                         q["source"], field="questions")
    return qs


def run_judge(unit: Unit, deps: dict[str, DepView]) -> UnitOutput:
    p = unit.params
    [gen] = deps.values()
    rows = [dict(r) for r in gen.rows]
    if p["task"] == "em":
        from characterlab.evals.freeform import judge_samples

        judgements, judge_id, agreement = judge_samples(rows, _questions(p["questions"]), p["judge_spec"], None)
        for r, j in zip(rows, judgements):
            r.update(j.to_dict())
        return UnitOutput(result={"judge": judge_id, "judge_agreement": agreement, "n": len(rows)}, rows=rows)
    if p["task"] == "trait":
        from characterlab.character.trait_eval import embedding_trait_scores, judge_trait_scores

        trait = " ".join(t.trait for t in _constitution(p["constitution"], p["trait"]).traits)
        if p["judge"] == "embedding":
            from characterlab.models.embeddings import SentenceEncoder

            scores = embedding_trait_scores([r["answer"] for r in rows], trait, SentenceEncoder())
        else:
            scores = judge_trait_scores([r["question"] for r in rows], [r["answer"] for r in rows], trait, p["judge"])
        for r, sc in zip(rows, scores):
            r["trait_score"] = sc
        return UnitOutput(result={"judge": p["judge_id"], "n": len(rows)}, rows=rows)
    from characterlab.envs.sandbox import Sandbox
    from characterlab.envs.tasks import generate_tasks
    from characterlab.evals.hacks import grade_answer

    g = gen.params
    tasks = generate_tasks(g["n"], seed=g["seed"], split=g["split"])
    sandbox = Sandbox()
    graded = [{**grade_answer(tasks[r["task_index"]], r["grader"], r["answer"], sandbox), "n_tokens": r["n_tokens"]}
              for r in rows]
    return UnitOutput(result={"grader": "sandbox", "n": len(graded)}, rows=graded)


def run_metric(unit: Unit, deps: dict[str, DepView]) -> UnitOutput:
    [jud] = deps.values()
    if unit.params["task"] == "em":
        from characterlab.evals.freeform import summarise

        return UnitOutput(result={"judge": jud.result.get("judge"),
                                  **summarise(jud.rows, _questions(unit.params["questions"]))})
    if unit.params["task"] == "trait":
        from characterlab.character.trait_eval import summarise_trait

        return UnitOutput(result={"judge": jud.result.get("judge"), **summarise_trait(jud.rows)})
    from characterlab.evals.hacks import summarise_hacks

    return UnitOutput(result=summarise_hacks(jud.rows))


def execute_unit(unit: Unit, deps: dict[str, DepView], workdir: Path, progress: bool = False) -> UnitOutput:
    """Run ``unit`` given its finished dependencies; ``workdir`` is an empty scratch folder."""
    if unit.kind == "data":
        return run_data(unit, deps)
    if unit.kind == "train":
        return run_train(unit, deps, workdir, progress)
    if unit.kind == "generate":
        return run_generate(unit, deps, progress)
    if unit.kind == "judge":
        return run_judge(unit, deps)
    if unit.kind == "metric":
        return run_metric(unit, deps)
    raise ValueError(f"unknown unit kind {unit.kind!r}")
