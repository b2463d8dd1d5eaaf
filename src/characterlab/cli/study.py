"""``characterlab run`` and ``characterlab report``: studies into run folders."""

from __future__ import annotations

from pathlib import Path

import typer

from characterlab.cli.choices import OFFLINE_HELP, TIMEOUT_HELP, Backend, Executor, checked_timeout
from characterlab.errors import InputError


def print_results_table(results: dict) -> None:
    """The pooled rates of every condition and evaluation of a ``results.json``, as a rich table."""
    from rich.console import Console
    from rich.table import Table

    from characterlab.evals.registry import get_evaluation
    from characterlab.study.results import in_spec_order
    from characterlab.study.tables import summary_rows

    results = in_spec_order(results)
    table = Table(title=f"{results['study']}: rates with 95% CIs (pooled over seeds {results['metadata']['seeds']}); "
                        "difference from the baseline with its Newcombe 95% CI, * = excludes 0, n.s. = does not "
                        "(MDE: smallest detectable)")
    table.add_column("condition")
    for name, e in results["evaluations"].items():
        table.add_column(f"{name} ({get_evaluation(e['kind']).title})")
    for cond, cells in summary_rows(results, with_differences=True):
        table.add_row(cond, *cells)
    import sys

    # off a terminal rich assumes 80 columns and cuts the table; a log file has no such limit
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def report_failures(r) -> None:
    ex = r.execution
    for key, err in ex.failed.items():
        typer.echo(f"failed: {r.plan.units[key].label}: {err}", err=True)
    typer.echo(f"{len(ex.failed)} unit(s) failed, {len(ex.skipped)} skipped; details in {r.folder / 'units.sqlite'}. "
               "Run again to retry them.", err=True)
    raise typer.Exit(1)


def run(
    study: str | None = typer.Argument(None, help="Study YAML, or builtin:<name> (default: builtin:quick)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run folder (default: runs/<study name>)."),
    executor: Executor = typer.Option(Executor.local, "--executor", help="Where units run."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (default: a local Ray)."),
    backend: Backend = typer.Option(Backend.auto, "--backend", help="Generation engine for local models: auto (vLLM on a CUDA GPU that has it, else hf) | hf | vllm."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (its study.yaml when no STUDY)."),
    update: bool = typer.Option(False, "--update", help="Run a changed study in an existing run folder, reusing "
                                "the finished units it shares."),
    seeds: str | None = typer.Option(None, "--seeds", help="Run at these seeds instead of the study's "
                                         "(comma-separated; e.g. one per machine, then `characterlab merge`)."),
    timeout: float | None = typer.Option(None, "--timeout", help=TIMEOUT_HELP + " Replaces the study's "
                                            "timeout:; neither is part of any unit's key."),
    offline: bool = typer.Option(False, "--offline", help=OFFLINE_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run a study: train, generate, judge and measure every condition x seed; write the report.

    Finished units are kept in the run folder and never recomputed: running again (or with
    --resume after an interruption) does only what is missing.
    """
    from characterlab.study.runner import run_study
    from characterlab.study.store import RESULTS_FILE

    r = run_study(study, out, executor=executor.value, address=address, resume=resume, progress=not quiet,
                  update=update, backend=backend.value, seeds=parse_seeds(seeds) if seeds is not None else None,
                  timeout=checked_timeout(timeout), offline=offline)
    ex = r.execution
    typer.echo(f"{r.folder}: {len(ex.run)} units run, {len(ex.reused)} reused, {ex.seconds:.1f} s")
    if ex.failed or ex.skipped:
        report_failures(r)
    print_results_table(r.results)
    typer.echo(f"report: {r.report}\nresults: {r.folder / RESULTS_FILE}")


def report(
    run_dir: Path = typer.Argument(..., help="A run folder with results.json."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the results as a Markdown table instead."),
    into: Path | None = typer.Option(None, "--into", help="With --markdown: write the table into this file, "
                                        "between '<!-- results:STUDY -->' and '<!-- /results:STUDY -->'."),
) -> None:
    """Re-render report.html and plots/ from a run folder's results.json (or print it as Markdown).
    The file may have been edited by hand, so it passes merge's checks first (one line, exit 2).
    The analyses derived from the figures alone (the judge-error correction among them, which
    changes when the judge's error on gold is measured after the run) are recomputed and written
    back into results.json first."""
    from characterlab.data.files import atomic_write_json
    from characterlab.study.merge import read_run_results
    from characterlab.study.report import render_report
    from characterlab.study.results import add_derived, results_path

    if into is not None and not markdown:
        raise InputError("--into needs --markdown", field="into")
    if not run_dir.is_dir():
        raise InputError("not a run folder", run_dir, field="run_dir")
    _, results = read_run_results(run_dir, field="run_dir")
    results = add_derived(results)
    atomic_write_json(results_path(run_dir), results)
    if markdown:
        from characterlab.study.tables import markdown as results_markdown
        from characterlab.study.tables import replace_marked_block

        text = results_markdown(results)
        if into is None:
            typer.echo(text, nl=False)
        else:
            from characterlab.study.store import disk_full_reported

            with disk_full_reported(into, "writing the results table"):
                replace_marked_block(into, results["study"], text)
            typer.echo(f"{into}: results of {results['study']} written")
        return
    typer.echo(str(render_report(run_dir)))


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"not a comma-separated list of integers: {text!r}", field="seeds") from None


def merge(
    runs: list[Path] = typer.Argument(..., help="Run folders (or their results.json) of one study at different seeds."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the merged results.json, report.html and plots/."),
) -> None:
    """Merge runs of one study made at different seeds (`characterlab run --seeds N`, one per
    machine or session) into one result: pooled rates, differences and analyses over all seeds."""
    from characterlab.data.files import atomic_write_json, check_output_dir
    from characterlab.study.merge import merge_results
    from characterlab.study.report import render_report
    from characterlab.study.store import DB_FILE, RESULTS_FILE, check_not_nested, disk_full_reported

    results = merge_results(runs)
    check_output_dir(out, "out")
    if (out / DB_FILE).exists():
        raise InputError("is a run folder; merge into a folder of its own", out, field="out")
    check_not_nested(out, "out")
    out.mkdir(parents=True, exist_ok=True)
    with disk_full_reported(out, f"writing {RESULTS_FILE}"):
        atomic_write_json(out / RESULTS_FILE, results)
    report_path = render_report(out)
    print_results_table(results)
    typer.echo(f"report: {report_path}\nresults: {out / RESULTS_FILE}")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("report")(report)
    app.command("merge")(merge)
