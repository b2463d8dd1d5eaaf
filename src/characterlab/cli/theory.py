"""``characterlab theory simulate``: the persona-mixture model of why rewarding hacks moves character."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(rich_markup_mode=None, help="The persona-mixture model of why rewarding hacks moves character.", no_args_is_help=True)


@app.command("simulate")
def theory_simulate_cmd(
    config: str = typer.Option(..., "--config", "-c",
                               help="Config YAML, or builtin:two_personas | builtin:instruction_follower | builtin:deceptive."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole result as JSON."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG of persona weights and P(hack) per step."),
    every: int = typer.Option(1, "--every", min=1, help="Print every N-th step (text output)."),
) -> None:
    """Train a persona mixture as configured; print pi and P(hack | context) per step, and
    d pi_evil / d step at the start (closed form and finite differences)."""
    from characterlab.data.files import check_output_file
    from characterlab.theory.simulate import (
        format_text,
        load_theory_config,
        plot_result,
        resolve_config,
        run_config,
    )

    if plot is not None:
        check_output_file(plot, "plot")

    result = run_config(load_theory_config(resolve_config(config)))
    typer.echo(json.dumps(result, indent=2) if as_json else format_text(result, every))
    if plot is not None:
        plot_result(result, plot)
        if not as_json:
            typer.echo(f"plot: {plot}")


@app.command("compare")
def theory_compare_cmd(
    run: Path = typer.Option(..., "--run", help="A study run folder (results.json) with a monitored organism."),
    condition: str = typer.Option(..., "--condition", help="The condition whose organism was monitored."),
    config: str = typer.Option(..., "--config", "-c", help="Theory config YAML, or builtin:bad_advice_sft | ..."),
    seed: int | None = typer.Option(None, "--seed", help="Which seed's training (default: the first)."),
    theory_run: str | None = typer.Option(None, "--theory-run", help="One run of the config (default: all)."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG of both curves on training progress."),
) -> None:
    """pi_evil of the persona-mixture model beside the persona weight a monitored fine-tune shows
    in its activations (calibrated projection on the trait's vector), on training progress."""
    from characterlab.data.files import check_output_file
    from characterlab.errors import InputError
    from characterlab.study.single import load_run_results
    from characterlab.theory.compare import compare_to_theory, plot_comparison
    from characterlab.theory.simulate import load_theory_config, resolve_config, run_config

    if plot is not None:
        check_output_file(plot, "plot")
    results = load_run_results(run)
    cond = results["conditions"].get(condition)
    if cond is None:
        raise InputError(f"no condition {condition!r}; the run has {', '.join(results['conditions'])}", run, field="condition")
    training = cond["training"]
    key = str(seed) if seed is not None else next(iter(training), None)
    curve = next((stage["monitor"] for stage in training.get(key, []) if stage.get("monitor")), None)
    if curve is None:
        raise InputError("this condition's organism was not monitored (monitor: in the study)", run, field="condition")
    out = compare_to_theory(curve, run_config(load_theory_config(resolve_config(config))), theory_run)
    typer.echo("progress  " + "  ".join(f"{p:>6.2f}" for p in out["progress"]))
    typer.echo("measured  " + "  ".join(f"{v:>6.3f}" for v in out["measured"]) + f"   change {out['measured_change']:+.3f}")
    for name, r in out["theory"].items():
        typer.echo("theory    " + "  ".join(f"{v:>6.3f}" for v in r["pi_evil"]) + f"   change {r['change']:+.3f}"
                   f"  ({name}; {'same' if r['same_direction'] else 'opposite'} direction)")
    if plot is not None:
        plot_comparison(out, plot, f"{condition} vs {config}")
        typer.echo(f"plot: {plot}")
