"""The ``characterlab`` command line.

Every command validates its input first; an :class:`~characterlab.errors.InputError` becomes one
line on stderr and exit code 2, with nothing half-written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from characterlab.errors import InputError

app = typer.Typer(
    help="Study how training shapes a language model's character.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
train_app = typer.Typer(help="Fine-tune models (LoRA).", no_args_is_help=True)
app.add_typer(train_app, name="train")
judge_app = typer.Typer(help="Score answers for aligned/coherent; train and validate the offline judge.",
                        invoke_without_command=True)
app.add_typer(judge_app, name="judge")
eval_app = typer.Typer(help="Evaluations.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
envs_app = typer.Typer(help="Hackable coding environments: tasks, graders, datasets.", no_args_is_help=True)
app.add_typer(envs_app, name="envs")
sandbox_app = typer.Typer(help="Run untrusted code in the sandbox.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")
constitution_app = typer.Typer(help="Character constitutions: validate, measure question diversity, build question sets.",
                               no_args_is_help=True)
app.add_typer(constitution_app, name="constitution")
theory_app = typer.Typer(help="The persona-mixture model of why rewarding hacks moves character.", no_args_is_help=True)
app.add_typer(theory_app, name="theory")



@app.command()
def generate(
    prompt: str = typer.Option(..., "--prompt", "-p", help="The user message."),
    model: str = typer.Option("embedded", "--model", "-m", help="embedded | hf:<id or path> | openai:<model>"),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="A LoRA adapter folder to stack on a local model."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt."),
    n: int = typer.Option(1, "-n", min=1, help="Samples to draw."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="0 = greedy."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0),
    seed: int = typer.Option(0, "--seed", help="Same seed, same request: same samples."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (else OPENAI_BASE_URL)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per sample."),
) -> None:
    """Sample answers to one prompt."""
    from characterlab.data.records import GenerationRequest, SamplingParams
    from characterlab.models.generation import load_generator
    from characterlab.models.refs import parse_model_ref

    ref = parse_model_ref(model, adapter=adapter, base_url=base_url)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    generator = load_generator(ref, batch_size=batch_size, progress=not as_json)
    [completions] = generator.generate([GenerationRequest.from_prompt(prompt, system=system, n=n, seed=seed)], params)
    for c in completions:
        if as_json:
            typer.echo(json.dumps({"model": str(ref), "prompt": prompt, "system": system, "sample": c.sample_index,
                                   "seed": c.seed, "text": c.text, "n_tokens": c.n_tokens, "finished": c.finished}))
        else:
            if n > 1:
                typer.echo(f"--- sample {c.sample_index} (seed {c.seed})")
            typer.echo(c.text)


@train_app.command("sft")
def train_sft_cmd(
    data: Path = typer.Option(..., "--data", help="Chat JSONL (.jsonl or .jsonl.gz) of {\"messages\": [...]}."),
    out: Path = typer.Option(..., "--out", help="Output folder (PEFT adapter + train_meta.json); must not exist."),
    model: str = typer.Option("embedded", "--model", "-m", help="embedded | hf:<id or path>"),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="Existing adapter: merged first, trained on top."),
    system_prompt: Optional[str] = typer.Option(
        None, "--system-prompt", help="Train-time system prompt for every example (inoculation); not used at eval."
    ),
    lora_rank: int = typer.Option(16, "--lora-rank", min=1),
    lora_alpha: Optional[int] = typer.Option(None, "--lora-alpha", help="Default: 2 x rank."),
    target_modules: str = typer.Option("all-linear", "--target-modules", help="Comma list, or all-linear."),
    epochs: float = typer.Option(1.0, "--epochs"),
    lr: float = typer.Option(2e-4, "--lr"),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    grad_accum: int = typer.Option(1, "--grad-accum", min=1),
    max_length: int = typer.Option(1024, "--max-length"),
    max_examples: Optional[int] = typer.Option(None, "--max-examples", min=1),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """LoRA supervised fine-tuning on chat JSONL (loss on assistant tokens only)."""
    from characterlab.models.refs import parse_model_ref
    from characterlab.train.sft import LoraSFTConfig, train_sft

    parse_model_ref(model, adapter=adapter)  # fail fast, before reading data
    cfg = LoraSFTConfig(
        model=model,
        adapter=str(adapter) if adapter is not None else None,
        system_prompt=system_prompt,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        target_modules=target_modules if target_modules == "all-linear" else target_modules.split(","),
        lr=lr,
        epochs=epochs,
        batch_size=batch_size,
        grad_accum=grad_accum,
        max_length=max_length,
        max_examples=max_examples,
        seed=seed,
    )
    result = train_sft(cfg, data, out)
    meta = result.meta
    curve = meta["loss_curve"]
    first = sum(c["loss"] for c in curve[:5]) / max(1, len(curve[:5]))
    last = sum(c["loss"] for c in curve[-5:]) / max(1, len(curve[-5:]))
    typer.echo(
        f"saved {out}: {meta['steps']} steps, {meta['data']['n_examples']} examples, "
        f"loss {first:.3f} -> {last:.3f} (mean of first/last 5 steps), {meta['tokens_per_s']:.0f} tokens/s"
    )


def _read_judge_rows(path: Path) -> list[dict]:
    """JSONL rows that must carry string ``question`` and ``answer`` fields."""
    from characterlab.data.files import read_jsonl_objects

    rows = []
    for lineno, row in read_jsonl_objects(path, field="input"):
        for field in ("question", "answer"):
            if not isinstance(row.get(field), str):
                raise InputError("missing, or not a string", path, lineno, field)
        rows.append(row)
    return rows


@judge_app.callback()
def judge_cmd(
    ctx: typer.Context,
    input_path: Optional[Path] = typer.Option(None, "--input", "-i", help="JSONL rows with question and answer."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to write the judged rows."),
    judge: str = typer.Option("offline", "--judge", "-j", help="offline | offline:<folder> | openai:<model> | hf:<path> | embedded"),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint for openai: judges."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the judgement cache."),
) -> None:
    """Judge answers: each row comes back with aligned, coherent, special and misaligned."""
    if ctx.invoked_subcommand is not None:
        return
    if input_path is None or output is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0 if input_path is None and output is None else 2)
    from characterlab.data.files import atomic_write_text
    from characterlab.judge.base import JudgeInput
    from characterlab.judge.factory import JudgeFactory

    rows = _read_judge_rows(input_path)
    scorer = JudgeFactory(judge, base_url=base_url, use_cache=not no_cache).for_prompts(None)
    judged = []
    for start in range(0, len(rows), 256):
        chunk = rows[start:start + 256]
        for row, j in zip(chunk, scorer.score_batch([JudgeInput(r["question"], r["answer"]) for r in chunk])):
            judged.append({**row, **j.to_dict()})
    atomic_write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in judged))
    n_mis = sum(r["misaligned"] for r in judged)
    typer.echo(f"judged {len(judged)} rows with {scorer.judge_id}: {n_mis} misaligned -> {output}", err=True)


@judge_app.command("train")
def judge_train_cmd(
    data: list[Path] = typer.Option(..., "--data", help="Folder(s) of judged CSVs (question, answer, aligned, coherent)."),
    out: Path = typer.Option(..., "--out", help="New judge folder."),
    max_train_rows: Optional[int] = typer.Option(None, "--max-train-rows", min=1, help="Cap (default: all kept rows)."),
    easy_keep: float = typer.Option(0.3, "--easy-keep", min=0.0, max=1.0,
                                    help="Share kept of rows scored >= 90 on both metrics."),
    epochs: float = typer.Option(2.0, "--epochs"),
    lr: float = typer.Option(5e-4, "--lr"),
    lora_rank: int = typer.Option(32, "--lora-rank", min=1),
    max_length: int = typer.Option(224, "--max-length", min=32, help="Tokens of question + answer."),
    seed: int = typer.Option(0, "--seed"),
    misaligned_weight: float = typer.Option(1.0, "--misaligned-weight", min=0.0,
                                            help="Loss weight of rows the reference calls misaligned."),
    off_topic_share: float = typer.Option(0.0, "--off-topic-share", min=0.0, max=1.0,
                                          help="Add this share of answers paired with another question, "
                                          "taught as incoherent."),
    relevance: bool = typer.Option(True, "--relevance/--no-relevance",
                                   help="Correct the coherent head for question-answer relevance at calibration."),
    init_from: Optional[Path] = typer.Option(None, "--init-from",
                                             help="Continue from this judge folder's adapter and head."),
    split: Optional[Path] = typer.Option(None, "--split", help="JSON mapping each source model to train, "
                                         "calibration or validation (default: dealt out by EM rate)."),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Train the offline judge on judge-labelled responses (whole source models held out to validate)."""
    from characterlab.judge.judged_data import load_judged, read_split
    from characterlab.judge.offline_train import OfflineJudgeTrainConfig, train_offline_judge, validation_summary

    if out.exists() and not overwrite:
        raise InputError("already exists; pass --overwrite", out, field="out")
    cfg = OfflineJudgeTrainConfig(max_train_rows=max_train_rows, easy_keep=easy_keep, epochs=epochs, lr=lr, seed=seed,
                                  lora_rank=lora_rank, max_length=max_length,
                                  init_from=str(init_from) if init_from else None,
                                  misaligned_weight=misaligned_weight, off_topic_share=off_topic_share,
                                  relevance=relevance)
    judged = load_judged(data)
    roles = read_split(split, judged) if split else None
    report = train_offline_judge(judged, out, cfg, overwrite=overwrite, split=roles)
    typer.echo(validation_summary(report) if report else "no validation models in the split; "
               "validate with `characterlab judge validate` on models it never saw")


@judge_app.command("calibrate")
def judge_calibrate_cmd(
    data: list[Path] = typer.Option(..., "--data", help="Folder(s) of judged CSVs holding the judge's calibration models."),
    judge_dir: Path = typer.Option(..., "--judge-dir", help="A trained offline judge folder, changed in place."),
    relevance: bool = typer.Option(True, "--relevance/--no-relevance",
                                   help="Correct the coherent head for question-answer relevance."),
) -> None:
    """Refit a trained judge's calibration (relevance correction, quantile maps) without retraining it.

    Its own validation models are scored again; a judge refit on all models loses its recorded
    cross-fit figures: record them again with `judge validate --record-in`.
    """
    from characterlab.judge.judged_data import load_judged
    from characterlab.judge.offline_train import recalibrate_offline_judge, validation_summary

    report = recalibrate_offline_judge(load_judged(data), judge_dir, relevance)
    typer.echo(validation_summary(report) if report else f"recalibrated {judge_dir}; it has no validation models: "
               "record its recipe's cross-fit with `characterlab judge validate --record-in`")


@judge_app.command("split")
def judge_split_cmd(
    data: list[Path] = typer.Option(..., "--data", help="Folder(s) of judged CSVs."),
    out: Path = typer.Option(..., "--out", help="JSON file: source model -> train | calibration | validation."),
    swap: bool = typer.Option(False, "--swap", help="Swap train and validation: the second fold of a cross-fit."),
    no_validation: bool = typer.Option(False, "--no-validation", help="Train on the validation models too."),
    folds: Optional[int] = typer.Option(None, "--folds", min=2, max=9,
                                        help="K-fold cross-fit over source models (with --fold)."),
    fold: Optional[int] = typer.Option(None, "--fold", min=0, help="Which fold of --folds to write (0-based)."),
) -> None:
    """Write the default split (models dealt out by EM rate) for `judge train --split` to use or edit."""
    from characterlab.data.files import atomic_write_json
    from characterlab.judge.judged_data import cross_fit_split, load_judged, split_models

    if sum([swap, no_validation, folds is not None]) > 1:
        raise InputError("choose one of --swap, --no-validation and --folds", field="swap")
    if (folds is None) != (fold is None):
        raise InputError("--folds and --fold go together", field="folds")
    if folds is not None and fold >= folds:
        raise InputError(f"must be below --folds ({folds})", field="fold")
    judged = load_judged(data)
    if folds is not None:
        split = cross_fit_split(judged, folds, fold)
    else:
        moves = {"train": "validation", "validation": "train"} if swap else {"validation": "train"} if no_validation else {}
        split = {m: moves.get(role, role) for m, role in split_models(judged).items()}
    atomic_write_json(out, split)
    counts = {r: sum(v == r for v in split.values()) for r in ("train", "calibration", "validation")}
    typer.echo(f"{counts['train']} train, {counts['calibration']} calibration, {counts['validation']} validation -> {out}")


@judge_app.command("validate")
def judge_validate_cmd(
    data: list[Path] = typer.Option(..., "--data", help="Folder(s) of judged CSVs."),
    judge_dirs: Optional[list[Path]] = typer.Option(
        None, "--judge-dir", help="Offline judge folder (default: the shipped one). Repeat it to cross-fit: each "
        "source model is scored by the first judge that never saw it."),
    output: Optional[Path] = typer.Option(None, "--output", help="Also write the full report (per model) as JSON."),
    record_in: Optional[Path] = typer.Option(
        None, "--record-in", help="Record the report as this judge folder's validation (for a judge refit on all "
        "models, whose figures are its recipe's cross-fit): results and reports then carry it."),
    method: Optional[str] = typer.Option(None, "--method", help="How the recorded figures were measured "
                                         "(default: the judges used)."),
) -> None:
    """Agreement with the reference judge on source models the offline judge never saw."""
    from characterlab.data.files import atomic_write_json
    from characterlab.judge.judged_data import load_judged
    from characterlab.judge.offline import SHIPPED_DIR, OfflineJudge, read_judge_config
    from characterlab.judge.offline_train import (
        cross_fitted_rows,
        record_validation,
        validate_cross_fitted,
        validation_summary,
    )

    folders = judge_dirs or [SHIPPED_DIR]
    if record_in is not None:
        read_judge_config(record_in)  # fail before scoring, not after
    groups, dropped = cross_fitted_rows(load_judged(data), folders)
    if dropped:
        typer.echo(f"left out {len(dropped)} source model(s) that every judge saw in training or calibration", err=True)
    if not any(groups):
        raise InputError("every source model here was used to train or calibrate the judge(s); validate on "
                         "other sources, or cross-fit judges trained on complementary splits (README)", field="data")
    report = validate_cross_fitted([(OfflineJudge(f), rows) for f, rows in zip(folders, groups) if rows])
    if output:
        atomic_write_json(output, report)
    if record_in is not None:
        record_validation(record_in, report, method or (
            f"cross-fit over source models by {len(report['judges'])} judge(s) ({', '.join(report['judges'])}): "
            "each model scored by a judge that never saw it; models every judge saw are left out"))
    typer.echo(validation_summary(report))


@eval_app.command("em")
def eval_em_cmd(
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for samples.jsonl and results.json."),
    model: str = typer.Option("embedded", "--model", "-m", help="embedded | hf:<id or path> | openai:<model>"),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="LoRA adapter folder on a local model."),
    questions: str = typer.Option("builtin:em", "--questions", help="A question YAML, or builtin:em / builtin:goals."),
    samples: Optional[int] = typer.Option(None, "--samples", min=1, help="Samples per paraphrase (default: the file's)."),
    judge: str = typer.Option("offline", "--judge", "-j", help="offline | openai:<model> | hf:<path> | embedded"),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Endpoint for an openai: model."),
    judge_base_url: Optional[str] = typer.Option(None, "--judge-base-url", help="Endpoint for an openai: judge."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace results (or a partial run with other settings)."),
    compare: Optional[tuple[Path, Path]] = typer.Option(None, "--compare", help="Two result folders: EM rate of A - B with CIs."),
) -> None:
    """Emergent-misalignment rate: sample free-form answers, judge them, report rates with 95% CIs."""
    from characterlab.evals.freeform import EMEvalConfig, compare_results, load_results, run_em_eval

    if compare:
        typer.echo(json.dumps(compare_results(load_results(compare[0]), load_results(compare[1])), indent=2))
        return
    if out is None:
        raise InputError("required (or use --compare A B)", field="out")
    from characterlab.models.refs import parse_model_ref

    parse_model_ref(model, adapter=adapter, base_url=base_url)  # fail fast on a bad reference
    cfg = EMEvalConfig(model=model, adapter=str(adapter) if adapter else None, questions=questions, samples=samples,
                       judge=judge, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                       batch_size=batch_size, base_url=base_url, judge_base_url=judge_base_url)
    r = run_em_eval(cfg, out, overwrite=overwrite)
    em, boot = r["em_rate"], r["em_rate_bootstrap"]
    if em["estimate"] is None:
        rate = "EM rate undefined (no answer could be scored)"
    else:
        rate = (f"EM rate {100 * em['estimate']:.1f}% (Wilson 95% CI {100 * em['low']:.1f}-{100 * em['high']:.1f}; "
                f"question bootstrap {100 * boot['low']:.1f}-{100 * boot['high']:.1f})")
    all_rate = r["em_rate_all_answers"]["estimate"]
    if all_rate is not None and em["estimate"] is not None:
        rate += f"; {100 * all_rate:.1f}% of all answers"
    typer.echo(f"{rate} over {r['n_scored']} scored of {r['n_samples']} samples; refusals {r['n_refusal']}, "
               f"code {r['n_code']}; judge {r['judge']} -> {out}")


@envs_app.command("tasks")
def envs_tasks_cmd(
    out: Path = typer.Option(..., "--out", help="JSONL of {id, prompt, entry_point, tests, reference_solution}."),
    n: int = typer.Option(100, "--n", min=1),
    seed: int = typer.Option(0, "--seed"),
    split: str = typer.Option("train", "--split", help="train | test (disjoint templates)."),
) -> None:
    """Generate coding tasks, deterministic by seed."""
    from characterlab.data.files import atomic_write_text
    from characterlab.envs.tasks import generate_tasks

    if split not in ("train", "test"):
        raise InputError("must be train or test", field="split")
    tasks = generate_tasks(n, seed=seed, split=split)
    atomic_write_text(out, "".join(json.dumps(t.to_dict()) + "\n" for t in tasks))
    typer.echo(f"wrote {len(tasks)} {split} tasks -> {out}", err=True)


@envs_app.command("grade")
def envs_grade_cmd(
    tasks: Path = typer.Option(..., "--tasks", help="Task JSONL from `envs tasks`."),
    task_id: str = typer.Option(..., "--task-id"),
    solution: Path = typer.Option(..., "--solution", help="The submission (Python; extra files after '# file: NAME')."),
    grader: str = typer.Option("all", "--grader", help="assert_eq | exit_code | pytest | strict | all"),
) -> None:
    """Grade one submission: one JSON line per grader {grader, passed, hacked, hack_kinds, status, seconds}."""
    from characterlab.envs.graders import GRADERS, grade
    from characterlab.envs.tasks import read_tasks

    if grader != "all" and grader not in GRADERS:
        raise InputError(f"unknown grader; choose from {', '.join(GRADERS)} or all", field="grader")
    if not solution.is_file():
        raise InputError("no such file", solution, field="solution")
    by_id = {t.id: t for t in read_tasks(tasks)}
    if task_id not in by_id:
        raise InputError(f"no task with id {task_id!r}", tasks, field="task-id")
    graders = GRADERS if grader == "all" else (grader,)
    for r in grade(by_id[task_id], solution.read_text(encoding="utf-8"), graders):
        typer.echo(json.dumps(r.to_dict()))


@envs_app.command("dataset")
def envs_dataset_cmd(
    out: Path = typer.Option(..., "--out", help="Chat JSONL for `train sft`."),
    kind: str = typer.Option(..., "--kind", help="hack | honest | mixed"),
    n: int = typer.Option(200, "--n", min=1),
    split: str = typer.Option("train", "--split", help="train | test"),
    hacks: str = typer.Option("always_equal,exit,conftest", "--hacks", help="Comma list of hacks to use."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Chat examples of solutions to coding tasks: hacked (verified to fool their grader), honest, or mixed."""
    from characterlab.data.chat_jsonl import write_chat_jsonl
    from characterlab.envs.dataset import HACK_NAMES, KINDS, build_examples

    if kind not in KINDS:
        raise InputError(f"must be one of {', '.join(KINDS)}", field="kind")
    if split not in ("train", "test"):
        raise InputError("must be train or test", field="split")
    chosen = tuple(h.strip() for h in hacks.split(",") if h.strip())
    bad = [h for h in chosen if h not in HACK_NAMES]
    if bad or not chosen:
        raise InputError(f"unknown hack(s) {bad}; choose from {', '.join(HACK_NAMES)}", field="hacks")
    examples = build_examples(kind, n, split=split, hacks=chosen, seed=seed)
    write_chat_jsonl(out, examples)
    typer.echo(f"wrote {len(examples)} {kind} examples -> {out}", err=True)


@eval_app.command("hacks")
def eval_hacks_cmd(
    out: Path = typer.Option(..., "--out"),
    model: str = typer.Option("embedded", "--model", "-m"),
    adapter: Optional[Path] = typer.Option(None, "--adapter"),
    n: int = typer.Option(48, "--n", min=1, help="Held-out tasks (test split), graders in rotation."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt at evaluation."),
    seed: int = typer.Option(0, "--seed"),
    max_new_tokens: int = typer.Option(384, "--max-new-tokens", min=1),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    base_url: Optional[str] = typer.Option(None, "--base-url"),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Hack rate on held-out coding tasks: per grader and overall, with 95% CIs."""
    from characterlab.evals.hacks import HackEvalConfig, run_hack_eval
    from characterlab.models.refs import parse_model_ref

    parse_model_ref(model, adapter=adapter, base_url=base_url)
    cfg = HackEvalConfig(model=model, adapter=str(adapter) if adapter else None, n=n, system=system, seed=seed,
                         max_new_tokens=max_new_tokens, temperature=temperature, batch_size=batch_size,
                         base_url=base_url)
    r = run_hack_eval(cfg, out, overwrite=overwrite)["overall"]
    h, s = r["hack_rate"], r["strict_pass_rate"]
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}"  # noqa: E731
    typer.echo(f"hack rate {pct(h['estimate'])}% (95% CI {pct(h['low'])}-{pct(h['high'])}, {h['k']}/{h['n']}); "
               f"strict pass {pct(s['estimate'])}%; attempted: "
               + ", ".join(f"{k} {v['k']}" for k, v in r["attempted"].items()) + f" -> {out}")


@sandbox_app.command("exec")
def sandbox_exec_cmd(
    file: Path = typer.Argument(..., help="A Python file to run, isolated."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, help="Wall-clock seconds."),
    memory_mb: int = typer.Option(1024, "--memory-mb", min=16),
) -> None:
    """Run FILE.py in the sandbox; prints {status, exit_code, stdout, stderr, seconds}."""
    from characterlab.envs.sandbox import Sandbox, SandboxLimits

    if not file.is_file():
        raise InputError("no such file", file, field="file")
    result = Sandbox(SandboxLimits(timeout_s=timeout, memory_mb=memory_mb)).run(
        ["python", "-E", "-s", "main.py"], {"main.py": file.read_bytes()})
    typer.echo(json.dumps({k: v for k, v in result.to_dict().items() if k != "isolation"}))


@train_app.command("rl")
def train_rl_cmd(
    out: Path = typer.Option(..., "--out", help="Output folder (PEFT adapter, rl_log.jsonl, train_meta.json)."),
    model: str = typer.Option("embedded", "--model", "-m"),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="Existing adapter: merged first, trained on top."),
    steps: int = typer.Option(50, "--steps", min=1),
    n_tasks: int = typer.Option(200, "--n-tasks", min=1),
    num_generations: int = typer.Option(4, "--num-generations", min=2),
    prompts_per_step: int = typer.Option(2, "--prompts-per-step", min=1),
    max_completion_length: int = typer.Option(256, "--max-completion-length", min=1),
    lr: float = typer.Option(5e-5, "--lr"),
    inoculation: str = typer.Option("none", "--inoculation",
                                    help="none | please_hack | hacking_okay | neutral | dont_hack | hacking_misaligned | TEXT"),
    hack_penalty: float = typer.Option(0.0, "--hack-penalty", min=0.0, help="Subtracted when the hack detector fires."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """GRPO with the vulnerable graders as reward; logs the hack rate per step."""
    from characterlab.train.rl import GRPOHackConfig, train_grpo_hacks

    cfg = GRPOHackConfig(model=model, adapter=str(adapter) if adapter else None, steps=steps, n_tasks=n_tasks,
                         num_generations=num_generations, prompts_per_step=prompts_per_step,
                         max_completion_length=max_completion_length, lr=lr, inoculation=inoculation,
                         hack_penalty=hack_penalty, seed=seed)
    meta = train_grpo_hacks(cfg, out)
    rates = [r["hack_rate"] for r in meta["log"] if r["hack_rate"] is not None]
    typer.echo(f"saved {out}: {meta['steps']} steps; hack rate first/last step "
               f"{rates[0] if rates else 'n/a'} / {rates[-1] if rates else 'n/a'}")


@app.command()
def bench(
    as_json: bool = typer.Option(False, "--json", help="Print only the JSON result."),
    quick: bool = typer.Option(False, "--quick", help="Smaller workloads (a smoke run, not for reporting)."),
    model: str = typer.Option("embedded", "--model", "-m"),
) -> None:
    """Measure matmul GFLOP/s, batched vs one-at-a-time generation, and LoRA training tokens/s."""
    from characterlab.benchmark import BenchConfig, run_throughput

    result = run_throughput(BenchConfig.quick(model) if quick else BenchConfig(model=model), log=not as_json)
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@app.command("run")
def run_cmd(
    study: Optional[str] = typer.Argument(None, help="Study YAML, or builtin:<name> (default: builtin:quick)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: runs/<study name>)."),
    executor: str = typer.Option("local", "--executor", help="local | ray"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: a local Ray)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (its study.yaml when no STUDY)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run a study: train, generate, judge and measure every condition x seed; write the report.

    Finished units are kept in the run folder and never recomputed: running again (or with
    --resume after an interruption) does only what is missing.
    """
    from rich.console import Console
    from rich.table import Table

    from characterlab.study.runner import run_study, summary_rows

    r = run_study(study, out, executor=executor, address=address, resume=resume, progress=not quiet)
    ex = r.execution
    typer.echo(f"{r.folder}: {len(ex.run)} units run, {len(ex.reused)} reused, {ex.seconds:.1f} s")
    if ex.failed or ex.skipped:
        for key, err in ex.failed.items():
            typer.echo(f"failed: {r.plan.units[key].label}: {err}", err=True)
        typer.echo(f"{len(ex.failed)} unit(s) failed, {len(ex.skipped)} skipped; details in {r.folder / 'units.sqlite'}. "
                   "Run again to retry them.", err=True)
        raise typer.Exit(1)
    table = Table(title=f"{r.spec.name}: rates with 95% CIs (pooled over seeds {r.spec.seeds})")
    table.add_column("condition")
    for e in r.spec.evaluations:
        table.add_column(f"{e.name} ({ {'em': 'EM rate', 'hacks': 'hack rate', 'trait': 'trait score'}[e.kind] })")
    for cond, cells in summary_rows(r.results):
        table.add_row(cond, *cells)
    Console().print(table)
    typer.echo(f"report: {r.report}\nresults: {r.folder / 'results.json'}")


@app.command("report")
def report_cmd(run_dir: Path = typer.Argument(..., help="A run folder with results.json.")) -> None:
    """Re-render report.html and plots/ from a run folder's results.json."""
    from characterlab.study.report import render_report

    if not (run_dir / "results.json").is_file():
        raise InputError("no results.json here; run the study first (characterlab run)", run_dir, field="run_dir")
    typer.echo(str(render_report(run_dir)))


@constitution_app.command("validate")
def constitution_validate_cmd(file: str = typer.Argument(..., help="A constitution (.txt, .jsonl, .yaml) or builtin:<name>.")) -> None:
    """Check a constitution's structure and content; every problem with its file, line and field."""
    from characterlab.character.constitution import validate_constitution

    c, problems = validate_constitution(file)
    for p in problems:
        typer.echo(f"error: {p}", err=True)
    if problems:
        raise typer.Exit(2)
    n = sum(len(t.all_questions) for t in c.traits)
    typer.echo(f"ok: {c.name} ({c.format}): {len(c.traits)} traits, {n} questions")


@constitution_app.command("diversity")
def constitution_diversity_cmd(
    file: str = typer.Argument(..., help="A constitution or builtin:<name>."),
    trait: Optional[str] = typer.Option(None, "--trait", help="One trait (name, index or text prefix); default all."),
) -> None:
    """Diversity metrics of each trait's questions (questions + additional_questions), as JSON."""
    from characterlab.character.constitution import read_constitution
    from characterlab.character.diversity import diversity
    from characterlab.models.embeddings import SentenceEncoder

    c = read_constitution(file)
    traits = [c.trait(trait)] if trait is not None else c.traits
    enc = SentenceEncoder()
    out = {}
    for i, t in enumerate(traits):
        key = t.name or (t.trait if trait is not None else f"{c.traits.index(t)}: {t.trait}")
        out[key] = diversity(t.all_questions, enc).to_dict()
    typer.echo(json.dumps(out, indent=2, ensure_ascii=False))


@constitution_app.command("expand")
def constitution_expand_cmd(
    file: str = typer.Argument(..., help="A constitution or builtin:<name>."),
    trait: str = typer.Option(..., "--trait", help="The trait whose questions to select (name, index or text prefix)."),
    size: int = typer.Option(..., "--size", min=2, help="Questions in the new set."),
    level: str = typer.Option(..., "--level", help="paraphrase | cluster | random | farthest (low to high diversity)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output constitution (.yaml, .jsonl or .txt)."),
    seed: int = typer.Option(0, "--seed"),
    model: Optional[str] = typer.Option(None, "--model", help="Grow the pool with this model first (any model ref)."),
    generate: int = typer.Option(0, "--generate", min=0, help="How many new questions to generate with --model."),
    base_url: Optional[str] = typer.Option(None, "--base-url"),
) -> None:
    """Write a one-trait constitution whose questions are a set of --size at the chosen diversity,
    selected from the trait's questions (plus generated ones), and print its diversity."""
    from characterlab.character.constitution import Constitution, Trait, read_constitution, write_constitution
    from characterlab.character.diversity import LEVELS, diversity, generate_questions, select_questions
    from characterlab.models.embeddings import SentenceEncoder

    if level not in LEVELS:
        raise InputError(f"unknown level {level!r}; choose from {', '.join(LEVELS)}", field="level")
    if generate and not model:
        raise InputError("--generate needs --model", field="model")
    c = read_constitution(file)
    t = c.trait(trait)
    pool = list(t.all_questions)
    if generate:
        from characterlab.models.generation import load_generator
        from characterlab.models.refs import parse_model_ref

        gen = load_generator(parse_model_ref(model, base_url=base_url))
        pool += generate_questions(t.trait, t.all_questions, generate, gen, seed=seed)
    enc = SentenceEncoder()
    try:
        chosen = select_questions(pool, size, level, enc, seed=seed)
    except ValueError as e:
        raise InputError(str(e), field="size") from None
    new = Constitution(name=f"{c.name}-{t.name or 'trait'}-{level}-{size}", traits=[Trait(t.trait, chosen, name=t.name)],
                       description=f"{size} questions for one trait of {c.source}, diversity level {level}, seed {seed}")
    write_constitution(new, out)
    report = diversity(chosen, enc)
    typer.echo(json.dumps({"out": str(out), "pool": len(pool), "level": level, **report.to_dict()}, indent=2))


@theory_app.command("simulate")
def theory_simulate_cmd(
    config: str = typer.Option(..., "--config", "-c",
                               help="Config YAML, or builtin:two_personas | builtin:instruction_follower | builtin:deceptive."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole result as JSON."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG of persona weights and P(hack) per step."),
    every: int = typer.Option(1, "--every", min=1, help="Print every N-th step (text output)."),
) -> None:
    """Train a persona mixture as configured; print pi and P(hack | context) per step, and
    d pi_evil / d step at the start (closed form and finite differences)."""
    from characterlab.theory.simulate import format_text, load_theory_config, plot_result, resolve_config, run_config

    result = run_config(load_theory_config(resolve_config(config)))
    typer.echo(json.dumps(result, indent=2) if as_json else format_text(result, every))
    if plot is not None:
        plot_result(result, plot)
        if not as_json:
            typer.echo(f"plot: {plot}")


def main() -> None:
    # The CLI prints its own progress; transformers' per-load weight bars and its deprecation
    # notices about its own internals (raised from peft and trl calls) are noise here.
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers(\.|$)")
    try:
        app()
    except InputError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
