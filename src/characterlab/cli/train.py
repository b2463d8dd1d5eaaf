"""``characterlab train <method>``: one command per registered training method, built from its config.

Each command's options are the method's config fields (:mod:`characterlab.train`; their pydantic
descriptions are the help and their defaults the study's) plus what every run shares (the output
folder, the model, the seed, the micro-batch budget) and what the method takes (the file it reads,
an adapter to train on top of, a train-time system prompt, persona vectors, a reward model:
:attr:`~characterlab.train.base.Trainer.uses`). A method registered as one module gets its command
here without any change to this file. ``characterlab sycophancy reward`` and ``optimise`` are the
``reward`` and ``rlhf`` commands under the names that organism's workflow uses.
"""

from __future__ import annotations

import inspect
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import click
import typer
from typer.core import TyperGroup

from characterlab.cli.choices import OFFLINE_HELP
from characterlab.cli.options import checked_config, config_options
from characterlab.train.base import Trainer, TrainRun
from characterlab.train.vectors import MONITOR_EVERY

RUN_DEFAULTS = {f.name: f.default for f in dataclass_fields(TrainRun)}  # stated once, on TrainRun
SYSTEM_PROMPT_HELP = ("Train-time system prompt (inoculation), never used at evaluation: a variant name (none, "
                      "please_hack, hacking_okay, neutral, dont_hack, hacking_misaligned) or any text.")
DATA_HELP = {
    "chat": "Chat JSONL (.jsonl or .jsonl.gz) of {\"messages\": [...]}, a .parquet file, or a Hugging Face dataset "
            "folder with a messages column.",
    "pairs": "JSONL of preference pairs {\"prompt\": [...], \"chosen\": [...], \"rejected\": [...]} (conversational).",
    "feedback": "A feedback file (`sycophancy feedback`'s, or yours in the same format).",
}


def vector_options(steer: str | None, ablate: str | None, monitor: str | None) -> dict:
    """``--steer DIR:LAYER:COEF``, ``--ablate DIR:L1,L2`` and ``--monitor DIR:LAYER[:EVERY]`` as
    :class:`~characterlab.train.base.TrainRun` fields (train/vectors.py)."""
    from characterlab.errors import InputError
    from characterlab.train.vectors import AblateInTraining, MonitorProjection, SteerInTraining

    def split(text: str, field: str, parts: tuple[int, ...]) -> list[str]:
        for n in sorted(parts, reverse=True):
            pieces = text.rsplit(":", n - 1)
            if len(pieces) == n and all(pieces):
                return pieces
        raise InputError(f"expected {' or '.join(str(n) for n in parts)} parts separated by ':'", field=field)

    def number(text: str, field: str, kind=int):
        try:
            return kind(text)
        except ValueError:
            raise InputError(f"not a number: {text!r}", field=field) from None

    out: dict = {}
    if steer:
        d, layer, coef = split(steer, "steer", (3,))
        out["steer"] = SteerInTraining(d, number(layer, "steer"), number(coef, "steer", float))
    if ablate:
        d, layers = split(ablate, "ablate", (2,))
        out["ablate"] = AblateInTraining(d, [number(x, "ablate") for x in layers.split(",")])
    if monitor:
        pieces = split(monitor, "monitor", (3, 2))
        every = {"every": number(pieces[2], "monitor")} if len(pieces) == 3 else {}
        out["monitor"] = MonitorProjection(pieces[0], number(pieces[1], "monitor"), **every)
    return out


def _run_options(trainer: Trainer) -> list[inspect.Parameter]:
    """The options of a run (:class:`TrainRun`) that ``trainer`` honours, and the file it reads."""
    p: list[tuple[str, Any, Any]] = []
    if trainer.reads != "none":
        p.append(("data", Path, typer.Option(..., trainer.data_option, help=DATA_HELP[trainer.reads])))
    if "reward_model" in trainer.uses:
        p.append(("reward_model", Path, typer.Option(..., "--reward-model",
                                                     help="A reward model's folder (`characterlab train reward`).")))
    p += [("out", Path, typer.Option(..., "--out", help="Output folder (PEFT adapter + train_meta.json); must not exist.")),
          ("model", str, typer.Option(RUN_DEFAULTS["model"], "--model", "-m", help="embedded | hf:<id or path>"))]
    if "adapter" in trainer.uses:
        p.append(("adapter", Path | None, typer.Option(None, "--adapter",
                                                          help="Existing adapter: merged first, trained on top.")))
    if "system_prompt" in trainer.uses:
        p.append(("system_prompt", str | None, typer.Option(None, "--system-prompt", "--inoculation",
                                                               help=SYSTEM_PROMPT_HELP)))
    if trainer.reads == "chat":
        p.append(("max_examples", int | None, typer.Option(None, "--max-examples", min=1,
                                                              help="Train on the file's first N examples.")))
    p += [("seed", int, typer.Option(RUN_DEFAULTS["seed"], "--seed")),
          ("micro_batch_tokens", int, typer.Option(
              RUN_DEFAULTS["micro_batch_tokens"], "--micro-batch-tokens", min=0,
              help="Most tokens per forward/backward pass; larger batches (RL: groups of completions) are split "
                   "and their gradients accumulated (same optimizer steps, less memory). 0: never split."))]
    if "vectors" in trainer.uses:
        p += [("steer", str | None, typer.Option(None, "--steer", help=(
                  "Preventative steering: VECTOR_DIR:LAYER:COEF added while training, nothing at evaluation."))),
              ("ablate", str | None, typer.Option(None, "--ablate", help=(
                  "CAFT: VECTOR_DIR:LAYER[,LAYER...] removed from the residual stream while training."))),
              ("monitor", str | None, typer.Option(None, "--monitor", help=(
                  "VECTOR_DIR:LAYER[:EVERY]: projection of held-out prompts on the vector every EVERY steps "
                  f"(default {MONITOR_EVERY}), in train_meta.json.")))]
    p.append(("offline", bool, typer.Option(False, "--offline", help=OFFLINE_HELP)))
    p.append(("quiet", bool, typer.Option(False, "--quiet", "-q", help="No progress output.")))
    return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
            for name, ann, default in p]


def train_command(trainer: Trainer):
    """The command that trains with ``trainer``: checks first (model, output folder, config, vector
    options, the file), then one call to :meth:`~characterlab.train.base.Trainer.train`."""
    config_params = config_options(trainer.config)
    names = [p.name for p in config_params]

    def command(**kw: Any) -> None:
        from characterlab.models.hub import check_hub_models
        from characterlab.models.refs import parse_model_ref
        from characterlab.train.base import check_new_output_dir
        from characterlab.train.transforms import resolve_inoculation

        adapter = kw.get("adapter")
        parse_model_ref(kw["model"], adapter=adapter)  # fail fast, before reading data
        check_hub_models([kw["model"]], offline=kw["offline"])
        check_new_output_dir(kw["out"])
        cfg = checked_config(trainer.config, {n: kw[n] for n in names})
        system = kw.get("system_prompt")
        run = TrainRun(model=kw["model"], adapter=str(adapter) if adapter is not None else None, seed=kw["seed"],
                       system_prompt=resolve_inoculation(system) if system else None,
                       micro_batch_tokens=kw["micro_batch_tokens"] or None,
                       reward_model=str(kw["reward_model"]) if kw.get("reward_model") is not None else None,
                       **vector_options(kw.get("steer"), kw.get("ablate"), kw.get("monitor")))
        rows = trainer.read_rows(kw["data"], kw.get("max_examples")) if trainer.reads != "none" else []
        meta = trainer.train(cfg, run, rows, kw["out"], progress=not kw["quiet"])
        typer.echo(trainer.describe(meta, kw["out"]))

    command.__signature__ = inspect.Signature(_run_options(trainer) + config_params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in command.__signature__.parameters.values()}  # type: ignore[attr-defined]
    command.__doc__ = trainer.title
    return command


def click_command(trainer: Trainer, name: str) -> click.Command:
    one = typer.Typer(rich_markup_mode=None, add_completion=False)
    one.command(name)(train_command(trainer))
    return typer.main.get_command(one)


class TrainerGroup(TyperGroup):
    """``characterlab train``'s commands come from the registry when they are asked for, so a
    method registered after this module was imported (a plugin, a test) has its command too."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from characterlab.train.registry import trainers

        return trainers().methods()

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        from characterlab.train.registry import trainers

        registry = trainers()
        return click_command(registry.get(name), name) if name in registry.by_method else None


app = typer.Typer(rich_markup_mode=None, cls=TrainerGroup, no_args_is_help=True,
                  help="Fine-tune models (LoRA): one command per registered training method.")
