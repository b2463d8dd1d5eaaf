"""``characterlab theory simulate``: the persona-mixture model of why rewarding hacks moves character."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(rich_markup_mode=None, help="The persona-mixture model of why rewarding hacks moves character.", no_args_is_help=True)


@app.command("simulate")
def theory_simulate_cmd(
    config: str = typer.Option(..., "--config", "-c",
                               help="Config YAML, or builtin:two_personas | builtin:instruction_follower | builtin:deceptive."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole result as JSON."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG of persona weights and P(hack) per step."),
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
