"""``characterlab export``: a finished run in other tools' formats."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(rich_markup_mode=None, help="Export a finished run in other tools' formats.", no_args_is_help=True)


@app.command("inspect")
def export_inspect_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder with results.json (characterlab run / eval)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the .eval logs (created if missing)."),
) -> None:
    """inspect_ai logs (.eval), one per condition x evaluation: open them with `inspect view --log-dir OUT`."""
    from characterlab.study.inspect_export import export_inspect

    for path in export_inspect(run_dir, out):
        typer.echo(str(path))
