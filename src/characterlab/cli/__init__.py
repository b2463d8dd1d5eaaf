"""The ``characterlab`` command line: one thin module per sub-app.

Every command turns its options into a config and calls one function. Input is validated first;
an :class:`~characterlab.errors.InputError` becomes one line on stderr and exit code 2, with
nothing half-written.
"""

from __future__ import annotations

import sys

import typer

from characterlab.cli import (
    constitution,
    envs,
    evaluate,
    export,
    judge,
    models,
    power,
    study,
    sycophancy,
    theory,
    train,
    vectors,
)
from characterlab.errors import InputError

app = typer.Typer(rich_markup_mode=None,
    help="Study how training shapes a language model's character.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models.register(app)
study.register(app)
power.register(app)
app.add_typer(train.app, name="train")
app.add_typer(judge.app, name="judge")
app.add_typer(evaluate.build_app(), name="eval")
app.add_typer(envs.app, name="envs")
app.add_typer(envs.sandbox_app, name="sandbox")
app.add_typer(constitution.app, name="constitution")
app.add_typer(theory.app, name="theory")
app.add_typer(export.app, name="export")
app.add_typer(vectors.app, name="vectors")
app.add_typer(sycophancy.app, name="sycophancy")


def main() -> None:
    # The CLI prints its own progress; transformers' per-load weight bars and its deprecation
    # notices about its own internals (raised from peft and trl calls) are noise here.
    import warnings

    from transformers.utils import logging as hf_logging

    from characterlab.allocator import keep_freed_memory

    keep_freed_memory()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers(\.|$)")
    try:
        app()
    except InputError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
