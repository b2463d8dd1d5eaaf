"""``characterlab power``: how many samples a comparison of two rates needs, or what n can detect."""

from __future__ import annotations

import typer


def power(
    p0: float = typer.Option(..., "--p0", min=0.0, max=1.0, help="The baseline rate (e.g. the base model's EM rate)."),
    p1: float | None = typer.Option(None, "--p1", min=0.0, max=1.0, help="The rate to detect."),
    n: int | None = typer.Option(None, "--n", min=1, help="Samples per condition: print what they can detect."),
    alpha: float = typer.Option(0.05, "--alpha", min=1e-6, max=0.5, help="Two-sided significance level."),
    target: float = typer.Option(0.8, "--power", min=0.05, max=0.999, help="The power wanted."),
) -> None:
    """Samples per condition to tell p0 from p1 (two-sided test of two rates, statsmodels, Cohen's h)."""
    from characterlab.errors import InputError
    from characterlab.stats import minimum_detectable_difference, n_for_power

    if p1 is None and n is None:
        raise InputError("give --p1 (how many samples?) or --n (what can they detect?)", field="p1")
    if p1 is not None:
        need = n_for_power(p0, p1, alpha, target)
        typer.echo(f"{p0:.3f} vs {p1:.3f}: " + ("the rates are equal; no n detects a difference" if need is None else
                   f"{need:.0f} samples per condition ({2 * need:.0f} in all) for {target:.0%} power at alpha {alpha}"))
    if n is not None:
        mde = minimum_detectable_difference(p0, n, n, alpha, target)
        typer.echo(f"n = {n} per condition, baseline {p0:.3f}: detects an increase of {100 * mde:.1f} points "
                   f"(to {p0 + mde:.3f}) with {target:.0%} power at alpha {alpha}")


def register(app: typer.Typer) -> None:
    app.command("power")(power)
