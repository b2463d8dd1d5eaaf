"""``characterlab judge label``: blind labelling files for the gold set (docs/gold-labelling.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from characterlab.cli.choices import TIMEOUT_HELP
from characterlab.errors import InputError

app = typer.Typer(rich_markup_mode=None, no_args_is_help=True,
                  help="Export answers for blind reading, import the labels, measure agreement between readers.")


def _write_labelling(out: Path, key_rows: list[dict]) -> Path:
    """The reader's file and its key beside it, each written whole or not at all."""
    from characterlab.data.files import atomic_write_text, jsonl_text
    from characterlab.study.gold_labels import blind_rows, key_path_for

    key = key_path_for(out)
    atomic_write_text(key, jsonl_text(key_rows))
    atomic_write_text(out, jsonl_text(blind_rows(key_rows)))
    return key


@app.command("export")
def export_cmd(
    runs: list[Path] | None = typer.Argument(None, help="Finished run folders whose EM answers to draw from."),
    out: Path = typer.Option(..., "--out", "-o", help="The labelling file (JSONL); its key is written beside it."),
    n: int = typer.Option(300, "--n", min=1, help="Answers to draw, shared equally over the cells."),
    evaluation: list[str] | None = typer.Option(None, "--evaluation", "-e",
                                                   help="Only these EM evaluations (default: every one)."),
    second_pass: int | None = typer.Option(None, "--second-pass", min=1,
                                              help="Instead: draw this many rows of an imported gold file (--from) "
                                              "for a second, independent reading."),
    from_gold: Path | None = typer.Option(None, "--from", help="What a --second-pass draws from: an imported "
                                             "gold file, or a labelling file's key (so both readings can go on at once)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Draw answers stratified by cell and by the judge's score; the reader sees only question and answer."""
    from characterlab.data.files import check_output_file
    from characterlab.study.gold_labels import draw_labelling, read_key_or_gold, second_pass_rows

    check_output_file(out, "out")
    if (second_pass is None) != (from_gold is None):
        raise InputError("--second-pass and --from go together", field="second-pass")
    if second_pass is not None:
        if runs:
            raise InputError("a --second-pass draws from --from, not from run folders", field="runs")
        key_rows = second_pass_rows(read_key_or_gold(from_gold), second_pass, seed)
    else:
        if not runs:
            raise InputError("give at least one run folder", field="runs")
        key_rows = draw_labelling(runs, n, seed, evaluation)
    key = _write_labelling(out, key_rows)
    typer.echo(f"{len(key_rows)} answers to read -> {out} (key: {key}; do not open it while labelling)", err=True)


@app.command("import")
def import_cmd(
    labelled: Path = typer.Argument(..., help="A labelling file with every row's verdict, aligned and coherent."),
    out: Path = typer.Option(..., "--out", "-o", help="The gold file (JSONL): key rows with the reader's labels."),
    key: Path | None = typer.Option(None, "--key", help="Its key (default: <name>.key.jsonl beside it)."),
    reader: str = typer.Option(..., "--reader", help="Who read the answers (recorded in every row)."),
    sitting: str = typer.Option("first", "--sitting", help="Which reading this is: first | second | ..."),
) -> None:
    """Check a filled-in labelling file against its key and write the gold rows (all or nothing)."""
    from characterlab.data.files import atomic_write_text, check_output_file, jsonl_text
    from characterlab.study.gold_labels import import_labels, key_path_for, verdict_counts

    check_output_file(out, "out")
    gold = import_labels(labelled, key or key_path_for(labelled))
    for row in gold:
        row["label"].update(reader=reader, sitting=sitting)
    atomic_write_text(out, jsonl_text(gold))
    typer.echo(f"{len(gold)} labelled answers ({verdict_counts(gold)}) -> {out}", err=True)


@app.command("agreement")
def agreement_cmd(
    first: Path = typer.Argument(..., help="Gold file of the first reading."),
    second: Path = typer.Argument(..., help="Gold file of the second reading (a --second-pass of the first)."),
    disagreements: Path | None = typer.Option(None, "--disagreements",
                                                 help="Write the rows the readings disagree on (JSONL), to resolve."),
) -> None:
    """Cohen's kappa between two readings of the same answers, on the verdict and on misaligned or not."""
    from characterlab.data.files import atomic_write_text, jsonl_text
    from characterlab.study.gold_labels import read_gold, reader_agreement

    a = reader_agreement(read_gold(first), read_gold(second))
    typer.echo(f"{a['n']} answers read twice: verdict agreement {100 * a['verdict_agree']:.1f}%, kappa "
               f"{a['verdict_kappa']:.3f}; misaligned or not: agreement {100 * a['misaligned_agree']:.1f}%, kappa "
               f"{a['misaligned_kappa']:.3f}; Spearman of aligned {a['aligned_spearman']:.3f}, of coherent "
               f"{a['coherent_spearman']:.3f}")
    if disagreements is not None:
        atomic_write_text(disagreements, jsonl_text(a["disagreements"]))
        typer.echo(f"{len(a['disagreements'])} disagreements -> {disagreements}", err=True)


@app.command("check")
def check_cmd(
    gold: Path = typer.Argument(..., help="A gold file (`judge label import`)."),
    judge: str = typer.Option("recorded", "--judge", "-j",
                              help="recorded (the study judge's verdicts kept in the gold rows) | offline | "
                              "offline:<folder> | openai:<model> | hf:<path> | embedded"),
    base_url: str | None = typer.Option(None, "--base-url", help="Endpoint for an openai: judge."),
    timeout: float | None = typer.Option(None, "--timeout", help=TIMEOUT_HELP),
    output: Path | None = typer.Option(None, "--output", help="Also write the figures (JSON)."),
    record_in: Path | None = typer.Option(None, "--record-in", help="Record the judge's error on this gold "
                                             "(per temperature) in this offline judge folder, where studies judged by "
                                             "it find it to correct their EM rates."),
) -> None:
    """A judge's misaligned flag against the readers: precision, recall, AUROC, Spearman, rates per cell.

    The gold rows must never have been seen by the judge (trained or calibrated on): a judge
    repaired on gold is checked on its cross-fitted verdicts instead (`judge repair`)."""
    from characterlab.data.files import atomic_write_json, check_output_file
    from characterlab.judge.gold_check import judge_on_gold
    from characterlab.study.gold_labels import read_gold

    if output is not None:
        check_output_file(output)
    rows = read_gold(gold)
    if judge == "recorded":
        verdicts, judge_id = [r["judge"] for r in rows], "recorded"
    else:
        from characterlab.judge.base import JudgeInput
        from characterlab.judge.factory import JudgeFactory, score_in_batches

        scorer = JudgeFactory(judge, base_url=base_url, timeout=timeout).for_prompts(None)
        verdicts = [j.to_dict() for j in score_in_batches(scorer, [JudgeInput(r["question"], r["answer"]) for r in rows])]
        judge_id = scorer.judge_id
    fig = judge_on_gold(rows, verdicts)
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    num = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [f"{judge_id} on {fig['n']} gold answers ({fig['read_misaligned']} read misaligned, {fig['flagged']} "
             f"flagged, {fig['unscored']} unscored): precision {pct(fig['precision'])}, recall {pct(fig['recall'])}, "
             f"AUROC {num(fig.get('auroc'))}, Spearman aligned {num(fig.get('spearman_aligned'))}, coherent "
             f"{num(fig.get('spearman_coherent'))}"]
    lines += [f"  {cell}: EM by judge {pct(c['em_rate_by_judge'])}, by reading {pct(c['em_rate_by_reading'])} "
              f"({c['read']} read)" for cell, c in fig["cells"].items()]
    typer.echo("\n".join(lines))
    if output is not None:
        atomic_write_json(output, {"judge": judge_id, "gold": str(gold), **fig})
    if record_in is not None:
        from characterlab.judge.gold_check import record_gold_error

        ids = sorted({i for r in rows for i in (r.get("judge_ids") or [])}) if judge == "recorded" else [judge_id]
        models = sorted({r.get("model") for r in rows})
        if len(ids) != 1 or len(models) != 1:
            raise InputError(f"holds answers of {len(models)} models judged by {len(ids)} judges; record one of each",
                             gold, field="gold")
        path = record_gold_error(record_in, rows, verdicts, ids[0], models[0], gold.name, method=f"judge label check {judge}")
        typer.echo(f"recorded the judge's error on {len(rows)} gold answers of {models[0]} -> {path}", err=True)


def _judge_line(name: str, fig: dict) -> str:
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    num = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    return (f"{name}: precision {pct(fig['precision'])}, recall {pct(fig['recall'])}, AUROC {num(fig.get('auroc'))}, "
            f"Spearman aligned {num(fig.get('spearman_aligned'))}, coherent {num(fig.get('spearman_coherent'))}")


@app.command("repair")
def repair_cmd(
    gold: Path = typer.Argument(..., help="A gold file of one model's answers (`judge label import`)."),
    judge_dir: Path = typer.Option(..., "--judge-dir", help="An offline judge folder, changed in place "
                                   "(copy the shipped one first: src/characterlab/judge/weights/offline-minilm)."),
    output: Path | None = typer.Option(None, "--output", help="Also write the figures (JSON)."),
) -> None:
    """Fit the judge's verdict stage for the gold's model (cross-fitted by condition), record its error on gold."""
    from characterlab.data.files import atomic_write_json, check_output_file
    from characterlab.judge.repair import repair_on_gold
    from characterlab.study.gold_labels import read_gold

    if output is not None:
        check_output_file(output)
    fig = repair_on_gold(judge_dir, read_gold(gold), gold.name)
    lines = [_judge_line(f"before ({fig['judge_before']})", fig["before"]),
             _judge_line(f"after, cross-fitted by condition ({fig['judge_after']})", fig["after_crossfit"])]
    for cell, b in fig["before"]["cells"].items():
        a = fig["after_crossfit"]["cells"][cell]
        pct = lambda v: "–" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        lines.append(f"  {cell}: EM by reading {pct(b['em_rate_by_reading'])}; by judge before "
                     f"{pct(b['em_rate_by_judge'])}, after {pct(a['em_rate_by_judge'])}")
    typer.echo("\n".join(lines))
    if output is not None:
        atomic_write_json(output, fig)


@app.command("answers")
def answers_cmd(
    runs: list[Path] = typer.Argument(..., help="Finished run folders."),
    out: Path = typer.Option(..., "--out", "-o", help="JSONL (.jsonl.gz: gzipped) of every judged EM answer."),
    evaluation: list[str] | None = typer.Option(None, "--evaluation", "-e", help="Only these EM evaluations."),
) -> None:
    """Every judged EM answer of the runs, to keep with a study's results (questions from public
    data are kept by reference, not copied): what a later session re-judges or labels from."""
    from characterlab.data.files import check_output_file
    from characterlab.study.gold_labels import run_answers, without_public_text, write_rows

    check_output_file(out, "out")
    rows = run_answers(runs, evaluation)
    write_rows(out, without_public_text(rows))
    typer.echo(f"{len(rows)} answers -> {out}", err=True)
