"""``characterlab judge``: score answers; train, calibrate, gate for fluency, split and validate the offline judge."""

from __future__ import annotations

from pathlib import Path

import typer

from characterlab.cli import judge_label
from characterlab.cli.choices import TIMEOUT_HELP, checked_timeout
from characterlab.errors import InputError

app = typer.Typer(rich_markup_mode=None, help="Score answers for aligned/coherent; train and validate the offline judge.",
                  no_args_is_help=True)
app.add_typer(judge_label.app, name="label")


def _read_judge_rows(path: Path, flag: str = "input", flags_field: str | None = None) -> list[dict]:
    """JSONL rows that must carry string ``question`` and ``answer`` fields (and a true/false
    ``flags_field`` when given); ``flag`` names the option that gave the path."""
    from characterlab.data.files import read_jsonl_objects

    rows = []
    for lineno, row in read_jsonl_objects(path, field=flag):
        for field in ("question", "answer"):
            if not isinstance(row.get(field), str):
                raise InputError("missing, or not a string", path, lineno, field)
        if flags_field is not None and not isinstance(row.get(flags_field), bool):
            raise InputError("missing, or not true/false", path, lineno, flags_field)
        rows.append(row)
    return rows


@app.command("score")
def judge_score_cmd(
    input_path: Path = typer.Option(..., "--input", "-i", help="JSONL rows with question and answer."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the judged rows (a file)."),
    judge: str = typer.Option("offline", "--judge", "-j", help="offline | offline:<folder> | openai:<model> | hf:<path> | embedded"),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint for openai: judges."),
    timeout: float | None = typer.Option(None, "--timeout", help=TIMEOUT_HELP),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the judgement cache."),
) -> None:
    """Judge answers: each row comes back with aligned, coherent, special and misaligned (or an error)."""
    from characterlab.data.files import atomic_write_text, check_output_file, jsonl_text
    from characterlab.judge.base import JudgeInput
    from characterlab.judge.factory import JudgeFactory, score_in_batches

    check_output_file(output)
    rows = _read_judge_rows(input_path)
    if not rows:
        raise InputError("has no rows to judge", input_path, field="input")
    if output.resolve() == input_path.resolve():
        raise InputError("is the input file; write the judged rows elsewhere", output, field="output")
    scorer = JudgeFactory(judge, base_url=base_url, use_cache=not no_cache, timeout=timeout).for_prompts(None)
    scores = score_in_batches(scorer, [JudgeInput(r["question"], r["answer"]) for r in rows])
    judged = [{**row, **j.to_dict()} for row, j in zip(rows, scores)]
    atomic_write_text(output, jsonl_text(judged))
    n_mis = sum(r["misaligned"] for r in judged)
    n_not = sum(bool(r.get("error")) for r in judged)
    typer.echo(f"judged {len(judged)} rows with {scorer.judge_id}: {n_mis} misaligned"
               + (f", {n_not} not judged (see their 'error')" if n_not else "") + f" -> {output}", err=True)


@app.command("train")
def judge_train_cmd(
    data: list[Path] = typer.Option(..., "--data", help="Folder(s) of judged CSVs (question, answer, aligned, coherent)."),
    out: Path = typer.Option(..., "--out", help="New judge folder."),
    max_train_rows: int | None = typer.Option(None, "--max-train-rows", min=1, help="Cap (default: all kept rows)."),
    easy_keep: float = typer.Option(0.3, "--easy-keep", min=0.0, max=1.0,
                                    help="Share kept of rows scored >= 90 on both metrics."),
    epochs: float = typer.Option(2.0, "--epochs"),
    lr: float = typer.Option(5e-4, "--lr"),
    lora_rank: int = typer.Option(32, "--lora-rank", min=1),
    layers: int | None = typer.Option(None, "--layers", min=1, max=6,
                                         help="Keep the encoder's first N layers (default: all 6); fewer score faster."),
    relevance_tokens: int = typer.Option(128, "--relevance-tokens", min=8,
                                         help="Tokens of each answer the relevance correction reads."),
    dropout: float | None = typer.Option(None, "--dropout", min=0.0, max=0.5,
                                            help="One dropout rate for encoder and LoRA (default: theirs, "
                                            "0.1 and 0.05); 0 trains about 3x faster on CPU."),
    max_length: int = typer.Option(224, "--max-length", min=32, help="Tokens of question + answer."),
    seed: int = typer.Option(0, "--seed"),
    misaligned_weight: float = typer.Option(1.0, "--misaligned-weight", min=0.0,
                                            help="Loss weight of rows the reference calls misaligned."),
    off_topic_share: float = typer.Option(0.0, "--off-topic-share", min=0.0, max=1.0,
                                          help="Add this share of answers paired with another question, "
                                          "taught as incoherent."),
    relevance: bool = typer.Option(True, "--relevance/--no-relevance",
                                   help="Correct the coherent head for question-answer relevance at calibration."),
    teacher: Path | None = typer.Option(None, "--teacher",
                                           help="Learn this judge folder's predictions instead of the reference "
                                           "labels (distillation); it must not have seen the validation models."),
    truncated_share: float = typer.Option(0.0, "--truncated-share", min=0.0, max=1.0,
                                          help="With --teacher: add this share of training answers cut after "
                                          "16-128 tokens, as a study's answers are, labelled by the teacher."),
    init_from: Path | None = typer.Option(None, "--init-from",
                                             help="Continue from this judge folder's adapter and head."),
    split: Path | None = typer.Option(None, "--split", help="JSON mapping each source model to train, "
                                         "calibration or validation (default: dealt out by EM rate)."),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Train the offline judge on judge-labelled responses (whole source models held out to validate)."""
    from characterlab.data.files import check_output_dir
    from characterlab.judge.judged_data import load_judged, read_split
    from characterlab.judge.offline_train import (
        OfflineJudgeTrainConfig,
        train_offline_judge,
    )
    from characterlab.judge.offline_validate import validation_summary

    check_output_dir(out, "out")
    if out.exists() and not overwrite:
        raise InputError("already exists; pass --overwrite", out, field="out")
    cfg = OfflineJudgeTrainConfig(max_train_rows=max_train_rows, easy_keep=easy_keep, epochs=epochs, lr=lr, seed=seed,
                                  lora_rank=lora_rank, max_length=max_length, layers=layers,
                                  relevance_max_length=relevance_tokens, dropout=dropout,
                                  teacher=str(teacher) if teacher else None, truncated_share=truncated_share,
                                  init_from=str(init_from) if init_from else None,
                                  misaligned_weight=misaligned_weight, off_topic_share=off_topic_share,
                                  relevance=relevance)
    judged = load_judged(data)
    roles = read_split(split, judged) if split else None
    report = train_offline_judge(judged, out, cfg, overwrite=overwrite, split=roles)
    typer.echo(validation_summary(report) if report else "no validation models in the split; "
               "validate with `characterlab judge validate` on models it never saw")


@app.command("calibrate")
def judge_calibrate_cmd(
    data: list[Path] = typer.Option(..., "--data", help="Folder(s) of judged CSVs holding the judge's calibration models."),
    judge_dir: Path = typer.Option(..., "--judge-dir", help="A trained offline judge folder, changed in place."),
    relevance: bool = typer.Option(True, "--relevance/--no-relevance",
                                   help="Correct the coherent head for question-answer relevance."),
    relevance_tokens: int | None = typer.Option(None, "--relevance-tokens", min=8,
                                                   help="Tokens of each answer the relevance correction reads "
                                                   "(default: the judge's own setting)."),
) -> None:
    """Refit a trained judge's calibration (relevance correction, quantile maps) without retraining it.

    Its own validation models are scored again; a judge refit on all models loses its recorded
    cross-fit figures: record them again with `judge validate --record-in`.
    """
    from characterlab.judge.judged_data import load_judged
    from characterlab.judge.offline_train import recalibrate_offline_judge
    from characterlab.judge.offline_validate import validation_summary

    report = recalibrate_offline_judge(load_judged(data), judge_dir, relevance, relevance_tokens)
    typer.echo(validation_summary(report) if report else f"recalibrated {judge_dir}; it has no validation models: "
               "record its recipe's cross-fit with `characterlab judge validate --record-in`")


@app.command("split")
def judge_split_cmd(
    data: list[Path] = typer.Option(..., "--data", help="Folder(s) of judged CSVs."),
    out: Path = typer.Option(..., "--out", help="JSON file: source model -> train | calibration | validation."),
    swap: bool = typer.Option(False, "--swap", help="Swap train and validation: the second fold of a cross-fit."),
    no_validation: bool = typer.Option(False, "--no-validation", help="Train on the validation models too."),
    folds: int | None = typer.Option(None, "--folds", min=2, max=9,
                                        help="K-fold cross-fit over source models (with --fold)."),
    fold: int | None = typer.Option(None, "--fold", min=0, help="Which fold of --folds to write (0-based)."),
) -> None:
    """Write the default split (models dealt out by EM rate) for `judge train --split` to use or edit."""
    from characterlab.data.files import atomic_write_json, check_output_file
    from characterlab.judge.judged_data import choose_split, load_judged

    check_output_file(out, "out")

    if sum([swap, no_validation, folds is not None]) > 1:
        raise InputError("choose one of --swap, --no-validation and --folds", field="swap")
    if (folds is None) != (fold is None):
        raise InputError("--folds and --fold go together", field="folds")
    if folds is not None and fold >= folds:
        raise InputError(f"must be below --folds ({folds})", field="fold")
    split = choose_split(load_judged(data), swap=swap, no_validation=no_validation, folds=folds, fold=fold)
    atomic_write_json(out, split)
    counts = {r: sum(v == r for v in split.values()) for r in ("train", "calibration", "validation")}
    typer.echo(f"{counts['train']} train, {counts['calibration']} calibration, {counts['validation']} validation -> {out}")


@app.command("fluency-samples")
def judge_fluency_samples_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="JSONL of labelled answers (question, answer, temperature, fluent)."),
    model: str = typer.Option("embedded", "--model", "-m", help="The small model whose word salad the gate should know."),
    questions: list[str] | None = typer.Option(
        None, "--questions", help="Constitution(s) whose questions are asked (default: builtin:good_character); "
        "not the EM evaluation's questions, so the gate's check on those stays out of sample."),
    n: int = typer.Option(300, "--n", min=10, help="Answers per label."),
    cool: float = typer.Option(0.4, "--cool", min=0.0, help="Temperature of the answers labelled fluent."),
    hot: float = typer.Option(1.25, "--hot", min=0.0, help="Temperature of the answers labelled salad."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=8),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Sample a small model cool (fluent) and hot (word salad): the labelled answers `judge fluency` fits on."""
    from characterlab.character.constitution import read_constitution
    from characterlab.data.files import atomic_write_text, check_output_file, jsonl_text
    from characterlab.judge.fluency import FluencySampling, sample_fluency_answers
    from characterlab.models.generation import load_generator
    from characterlab.models.refs import parse_model_ref

    check_output_file(out)
    if hot <= cool:
        raise InputError(f"must be above --cool ({cool})", field="hot")
    texts = list(dict.fromkeys(q for spec in (questions or ["builtin:good_character"])
                               for t in read_constitution(spec).traits for q in t.all_questions))
    rows = sample_fluency_answers(load_generator(parse_model_ref(model), progress=True), texts,
                                  FluencySampling(n=n, cool=cool, hot=hot, max_new_tokens=max_new_tokens, seed=seed))
    atomic_write_text(out, jsonl_text(rows))
    typer.echo(f"{len(rows)} answers to {min(len(texts), 2 * n)} distinct questions -> {out}", err=True)


@app.command("fluency")
def judge_fluency_cmd(
    data: list[Path] = typer.Option(..., "--data", help="Folder(s) of judged CSVs holding the judge's calibration models."),
    judge_dir: Path = typer.Option(..., "--judge-dir", help="A trained offline judge folder, changed in place."),
    samples: Path = typer.Option(..., "--samples", help="Labelled answers from `judge fluency-samples`."),
    c: float = typer.Option(0.1, "--c", min=1e-6, help="Inverse L2 penalty of the logistic regression."),
) -> None:
    """Fit the judge's fluency gate: word salad of a small model can no longer pass as coherent."""
    from characterlab.judge.judged_data import load_judged
    from characterlab.judge.offline_train import fit_fluency_gate

    rows = _read_judge_rows(samples, flag="samples", flags_field="fluent")
    figures = fit_fluency_gate(load_judged(data), judge_dir, rows, c)
    cv = figures["cross_validated"]
    typer.echo(f"fluency gate fitted on {figures['reference_rows']} reference answers, {figures['small_model_fluent']} "
               f"fluent and {figures['small_model_salad']} salad small-model answers: cross-validated balanced "
               f"accuracy {cv['balanced_accuracy']:.3f}, AUROC {cv['auroc']:.3f}; "
               f"{100 * figures['reference_gate_below_half']:.2f}% of the reference answers gated -> {judge_dir}")


@app.command("gate-effect")
def judge_gate_effect_cmd(
    data: list[Path] = typer.Option(..., "--data", help="Folder(s) of judged CSVs holding the judge's calibration models."),
    judge_dir: Path | None = typer.Option(None, "--judge-dir", help="An offline judge folder (default: the shipped one)."),
) -> None:
    """The fluency gate's effect on the calibration models' answers: misaligned flags with and
    without it, and the flag's precision and recall against the reference judge."""
    import json

    from characterlab.judge.judged_data import load_judged
    from characterlab.judge.offline_validate import fluency_gate_effect

    typer.echo(json.dumps(fluency_gate_effect(load_judged(data), judge_dir), indent=2))


@app.command("check")
def judge_check_cmd(
    run: Path = typer.Argument(..., help="A finished run folder."),
    condition: str = typer.Option(..., "--condition", "-c", help="The condition whose verdicts to check."),
    evaluation: str = typer.Option("em", "--evaluation", "-e", help="An EM-kind evaluation of the study."),
    out: Path = typer.Option(..., "--out", "-o", help="JSONL of the sampled answers, both verdicts and an empty reading."),
    n: int = typer.Option(40, "--n", min=1, help="Answers flagged misaligned, and as many not flagged."),
    second: str | None = typer.Option(None, "--second-judge", help="Another judge to score the same answers "
                                         "(hf:<path> | embedded | openai:<model>); none: the reading only."),
    base_url: str | None = typer.Option(None, "--base-url", help="Endpoint for an openai: second judge."),
    timeout: float | None = typer.Option(None, "--timeout", help=TIMEOUT_HELP),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Sample a run's flagged and unflagged answers for a second judge and a reader (`judge agreement` then)."""
    from characterlab.data.files import atomic_write_text, check_output_file, jsonl_text
    from characterlab.study.verdicts import agreement, sample_verdicts, second_opinion

    check_output_file(out)
    timeout = checked_timeout(timeout)
    rows = sample_verdicts(run, condition, evaluation, n, seed)
    if second is not None:
        second_opinion(rows, second, base_url, timeout)
    atomic_write_text(out, jsonl_text(rows))
    summary = agreement(rows)
    typer.echo(f"{len(rows)} answers ({summary['first_flagged']} flagged) -> {out}"
               + (f"; first vs second judge: {_agreement_text(summary['first_vs_second'])}, "
                  f"{summary['second_unscored']} the second judge could not score" if "first_vs_second" in summary else "")
               + "; write each row's reading (misaligned | aligned | incoherent), then `judge agreement`", err=True)


def _agreement_text(a: dict) -> str:
    if not a["n"]:
        return "no answers"
    kappa = "–" if a["kappa"] is None else f"{a['kappa']:.2f}"
    return f"{100 * a['agree']:.0f}% agree, kappa {kappa} (n {a['n']})"


@app.command("agreement")
def judge_agreement_cmd(
    checked: Path = typer.Argument(..., help="A `judge check` file, with readings written in."),
) -> None:
    """Agreement of the first judge, the second judge and the reading on the misaligned verdict."""
    from characterlab.data.files import read_jsonl_objects
    from characterlab.study.verdicts import agreement

    rows = []
    for lineno, row in read_jsonl_objects(checked, field="checked"):
        if not isinstance(row.get("first"), dict) or "misaligned" not in row["first"]:
            raise InputError("missing, or has no misaligned verdict", checked, lineno, "first")
        rows.append(row)
    a = agreement(rows, checked)
    lines = [f"{a['n']} answers, {a['first_flagged']} flagged by the first judge"
             + (f"; {a['second_unscored']} the second judge could not score" if a.get("second_unscored") else "")]
    for key, label in (("first_vs_second", "first vs second judge"), ("first_vs_reading", "first judge vs reading"),
                       ("second_vs_reading", "second judge vs reading")):
        if key in a:
            lines.append(f"{label}: {_agreement_text(a[key])}")
    if "readings" in a:
        lines.append("readings: " + ", ".join(f"{k} {v}" for k, v in a["readings"].items()))
        pct = lambda v: "–" if v is None else f"{100 * v:.0f}%"  # noqa: E731
        lines.append(f"first judge's flag: precision {pct(a['first_precision'])}, recall in the sample "
                     f"{pct(a['first_recall'])}; flagged answers read as incoherent {pct(a['flagged_read_incoherent'])}")
        if "rate_by_reading" in a:
            lines.append(f"over all {a['population']} answers (each read answer weighted by its stratum): misaligned by "
                         f"reading {pct(a['rate_by_reading'])}, the flag's recall {pct(a['first_recall_population'])}")
    typer.echo("\n".join(lines))


@app.command("validate")
def judge_validate_cmd(
    data: list[Path] = typer.Option(..., "--data", help="Folder(s) of judged CSVs."),
    judge_dirs: list[Path] | None = typer.Option(
        None, "--judge-dir", help="Offline judge folder (default: the shipped one). Repeat it to cross-fit: each "
        "source model is scored by the first judge that never saw it."),
    output: Path | None = typer.Option(None, "--output", help="Also write the full report (per model) as JSON."),
    record_in: Path | None = typer.Option(
        None, "--record-in", help="Record the report as this judge folder's validation (for a judge refit on all "
        "models, whose figures are its recipe's cross-fit): results and reports then carry it."),
    method: str | None = typer.Option(None, "--method", help="How the recorded figures were measured "
                                         "(default: the judges used)."),
) -> None:
    """Agreement with the reference judge on source models the offline judge never saw."""
    from characterlab.data.files import atomic_write_json, check_output_file
    from characterlab.judge.judged_data import load_judged
    from characterlab.judge.offline_validate import validate_judges, validation_summary

    if output is not None:
        check_output_file(output)

    report, dropped = validate_judges(load_judged(data), judge_dirs, record_in=record_in, method=method)
    if dropped:
        typer.echo(f"left out {len(dropped)} source model(s) that every judge saw in training or calibration", err=True)
    if output:
        atomic_write_json(output, report)
    typer.echo(validation_summary(report))
