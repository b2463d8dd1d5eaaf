"""``characterlab eval <kind>``: one command per registered evaluation, built from its config.

Each command's options are the evaluation's config fields (their pydantic descriptions are the
help; :mod:`characterlab.cli.options` makes them, as for ``characterlab train``) plus the options
every evaluation shares (model, adapter, seed, output folder and, for an evaluation scored by a
judge, the judge). An evaluation added as one module gets its command here
without any change to this file. The run goes through :func:`~characterlab.study.single.run_evaluation`,
the same planner, store and executor as ``characterlab run``.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import click
import typer
from typer.core import TyperGroup

from characterlab.cli.choices import OFFLINE_HELP, TIMEOUT_HELP, Backend, checked_timeout
from characterlab.cli.options import checked_config, config_options
from characterlab.errors import InputError
from characterlab.evals.base import Evaluation

# defaults on the command line where a study must say what it means (a study names its questions)
CLI_DEFAULTS: dict[tuple[str, str], Any] = {("em", "questions"): "builtin:em"}


def _common(ev: Evaluation) -> list[inspect.Parameter]:
    kw = inspect.Parameter.KEYWORD_ONLY
    p = [
        ("out", Path | None, typer.Option(None, "--out", help="Run folder (required unless --compare).")),
        ("model", str, typer.Option("embedded", "--model", "-m", help="embedded | hf:<id or path> | openai:<model>")),
        ("adapter", Path | None, typer.Option(None, "--adapter", help="LoRA adapter folder on a local model.")),
        ("seed", int, typer.Option(0, "--seed")),
        ("base_url", str | None, typer.Option(None, "--base-url", help="Endpoint for an openai: model.")),
        ("timeout", float | None, typer.Option(None, "--timeout", help=TIMEOUT_HELP)),
        ("backend", Backend, typer.Option(Backend.auto, "--backend", help="Generation engine for local models: auto (vLLM on a CUDA GPU that has it, else hf) | hf | vllm.")),
        ("offline", bool, typer.Option(False, "--offline", help=OFFLINE_HELP)),
    ]
    if ev.uses_judge:
        p += [("judge", str, typer.Option("offline", "--judge", "-j",
                                          help="offline | offline:<folder> | openai:<model> | hf:<path> | embedded")),
              ("judge_base_url", str | None, typer.Option(None, "--judge-base-url", help="Endpoint for an openai: judge."))]
    p += [("overwrite", bool, typer.Option(False, "--overwrite", help="Replace a run folder holding other settings.")),
          ("quiet", bool, typer.Option(False, "--quiet", "-q", help="No progress bars.")),
          ("compare", tuple[Path, Path] | None, typer.Option(None, "--compare", help="Two run folders: A - B with 95% CIs."))]
    if ev.input_schema is not None:
        p += [("schema", bool, typer.Option(False, "--schema", help="Print the JSON schema of its input files and exit."))]
    return [inspect.Parameter(name, kw, default=default, annotation=ann) for name, ann, default in p]


def _config_params(ev: Evaluation) -> list[inspect.Parameter]:
    return config_options(ev.config, skip=("name", "kind"),
                          defaults={name: v for (kind, name), v in CLI_DEFAULTS.items() if kind == ev.kind})


def _command(ev: Evaluation):
    config_params = _config_params(ev)
    names = [p.name for p in config_params]

    def command(**kw: Any) -> None:
        from characterlab.study.single import (
            compare_runs,
            load_run_results,
            run_evaluation,
        )

        if kw.get("schema"):
            typer.echo(json.dumps(ev.input_schema(), indent=2))
            return
        if kw["compare"]:
            a, b = kw["compare"]
            typer.echo(json.dumps(compare_runs(load_run_results(a), load_run_results(b)), indent=2))
            return
        if kw["out"] is None:
            raise InputError("required (or use --compare A B)", field="out")
        from characterlab.models.refs import parse_model_ref

        parse_model_ref(kw["model"], adapter=kw["adapter"], base_url=kw["base_url"])  # fail fast on a bad reference
        timeout = checked_timeout(kw["timeout"])
        fields = {n: kw[n] for n in names}
        checked_config(ev.config, fields, name=ev.kind, kind=ev.kind)
        if ev.uses_judge:
            from characterlab.judge.refs import parse_judge_ref

            parse_judge_ref(kw["judge"], kw["judge_base_url"])
        run = run_evaluation(ev.kind, fields, kw["out"], model=kw["model"],
                             adapter=str(kw["adapter"]) if kw["adapter"] else None, judge=kw.get("judge", "offline"),
                             seed=kw["seed"], base_url=kw["base_url"], judge_base_url=kw.get("judge_base_url"),
                             overwrite=kw["overwrite"], progress=not kw["quiet"], backend=kw["backend"].value,
                             timeout=timeout, offline=kw["offline"])
        if run.execution.failed or run.execution.skipped:
            from characterlab.cli.study import report_failures

            report_failures(run)
        [cell] = run.plan.cells
        metric = run.results["conditions"][cell.condition]["evaluations"][cell.evaluation]["per_seed"][str(cell.seed)]
        judge = f"; judge {metric['judge']}" if metric.get("judge") else ""
        typer.echo(f"{ev.describe(metric)}{judge} -> {kw['out']}")

    command.__signature__ = inspect.Signature(_common(ev) + config_params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in command.__signature__.parameters.values()}  # type: ignore[attr-defined]
    command.__doc__ = (type(ev).__doc__ or ev.title).strip().split("\n\n")[0]  # the first paragraph, whole
    return command


def nem(
    out: Path = typer.Option(..., "--out", help="Run folder."),
    model: str = typer.Option("embedded", "--model", "-m", help="embedded | hf:<id or path> | openai:<model>"),
    adapter: Path | None = typer.Option(None, "--adapter", help="LoRA adapter folder on a local model."),
    seed: int = typer.Option(0, "--seed"),
    base_url: str | None = typer.Option(None, "--base-url", help="Endpoint for an openai: model."),
    timeout: float | None = typer.Option(None, "--timeout", help=TIMEOUT_HELP),
    backend: Backend = typer.Option(Backend.auto, "--backend", help="Generation engine for local models: auto (vLLM on a CUDA GPU that has it, else hf) | hf | vllm."),
    judge: str = typer.Option("offline", "--judge", "-j", help="offline | offline:<folder> | openai:<model> | hf:<path> | embedded"),
    judge_base_url: str | None = typer.Option(None, "--judge-base-url", help="Endpoint for an openai: judge."),
    offline: bool = typer.Option(False, "--offline", help=OFFLINE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run folder holding other settings."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """The reward-hacking paper's misalignment suite (Betley's questions, goals, alignment questions, three agentic scenarios) and its mean."""
    from characterlab.judge.refs import parse_judge_ref
    from characterlab.models.refs import parse_model_ref
    from characterlab.study.single import run_suite

    parse_model_ref(model, adapter=adapter, base_url=base_url)
    parse_judge_ref(judge, judge_base_url)
    timeout = checked_timeout(timeout)
    run = run_suite(out, model=model, adapter=str(adapter) if adapter else None, judge=judge, seed=seed,
                    base_url=base_url, judge_base_url=judge_base_url, overwrite=overwrite, progress=not quiet,
                    backend=backend.value, timeout=timeout, offline=offline)
    if run.execution.failed or run.execution.skipped:
        from characterlab.cli.study import report_failures

        report_failures(run)
    from characterlab.evals.registry import get_evaluation

    [cond] = run.results["conditions"].values()
    for name, entry in cond["evaluations"].items():
        typer.echo(f"{name}: {get_evaluation(entry['kind']).describe(entry['per_seed'][str(seed)])}")
    [s] = run.results["misalignment_score"]["conditions"].values()
    if s["score"] is None:
        typer.echo(f"misalignment score: nothing judged -> {out}")
    else:
        typer.echo(f"misalignment score {100 * s['score']:.1f}% [{100 * s['low']:.1f}, {100 * s['high']:.1f}] "
                   f"(mean of {len(s['judged'])} of {len(s['components'])}; left out, nothing measured: "
                   f"{', '.join(s['left_out']) or 'none'}) -> {out}")


SUITES = {"nem": nem}  # commands that run several evaluations, beside one per registered kind


class EvaluationGroup(TyperGroup):
    """``characterlab eval``'s commands come from the registry when they are asked for, so an
    evaluation registered after this module was imported (a plugin, a test) has its command too."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from characterlab.evals.registry import evaluations

        return sorted([*evaluations().kinds(), *SUITES])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        from characterlab.evals.registry import evaluations

        registry = evaluations()
        if name not in registry.by_kind and name not in SUITES:
            return None
        one = typer.Typer(rich_markup_mode=None, add_completion=False)
        one.command(name)(SUITES[name] if name in SUITES else _command(registry.get(name)))
        return typer.main.get_command(one)


def build_app() -> typer.Typer:
    return typer.Typer(rich_markup_mode=None, cls=EvaluationGroup, help="Evaluations: one command per registered evaluation.",
                       no_args_is_help=True)
