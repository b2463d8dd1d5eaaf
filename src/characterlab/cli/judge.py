"""``characterlab judge``: score answers; train, calibrate, split and validate the offline judge."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from characterlab.errors import InputError

app = typer.Typer(rich_markup_mode=None, help="Score answers for aligned/coherent; train and validate the offline judge.",
                  no_args_is_help=True)


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


@app.command("score")
def judge_score_cmd(
    input_path: Path = typer.Option(..., "--input", "-i", help="JSONL rows with question and answer."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the judged rows (a file)."),
    judge: str = typer.Option("offline", "--judge", "-j", help="offline | offline:<folder> | openai:<model> | hf:<path> | embedded"),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint for openai: judges."),
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
    scorer = JudgeFactory(judge, base_url=base_url, use_cache=not no_cache).for_prompts(None)
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
                                  lora_rank=lora_rank, max_length=max_length,
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
) -> None:
    """Refit a trained judge's calibration (relevance correction, quantile maps) without retraining it.

    Its own validation models are scored again; a judge refit on all models loses its recorded
    cross-fit figures: record them again with `judge validate --record-in`.
    """
    from characterlab.judge.judged_data import load_judged
    from characterlab.judge.offline_train import recalibrate_offline_judge
    from characterlab.judge.offline_validate import validation_summary

    report = recalibrate_offline_judge(load_judged(data), judge_dir, relevance)
    typer.echo(validation_summary(report) if report else f"recalibrated {judge_dir}; it has no validation models: "
               "record its recipe's cross-fit with `characterlab judge validate --record-in`")


@app.command("split")
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


@app.command("validate")
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
