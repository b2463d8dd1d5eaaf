"""Command-line options made from a pydantic config: one option per field, its description the help.

``characterlab eval <kind>`` and ``characterlab train <method>`` both build their options this way,
so a field added to an evaluation's or a training method's config is an option without any change
here, with the config's own default: nothing is stated twice. A field may name its option
(``json_schema_extra={"cli": "--lora-rank"}``) where the command line spelled it so first.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Literal, Union

import typer
from pydantic import BaseModel, ValidationError

from characterlab.errors import InputError


def option_name(name: str, field: Any = None) -> str:
    extra = getattr(field, "json_schema_extra", None)
    if isinstance(extra, dict) and "cli" in extra:
        return extra["cli"]
    return "--" + name.replace("_", "-")


def cli_type(annotation: Any) -> tuple[Any, str]:
    """A type typer can parse, and a note for the help (Literal choices are checked by pydantic)."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner, note = cli_type(args[0]) if len(args) == 1 else (str, "")
        return inner | None, note
    if origin is Literal:
        return str, " | ".join(str(a) for a in typing.get_args(annotation))
    return annotation, ""


def config_options(config: type[BaseModel], skip: tuple[str, ...] = (),
                   defaults: dict[str, Any] | None = None) -> list[inspect.Parameter]:
    """One keyword parameter (a typer option) per field of ``config`` not in ``skip``; ``defaults``
    replaces a field's default where a command must offer one a study need not have."""
    out = []
    for name, field in config.model_fields.items():
        if name in skip:
            continue
        ann, choices = cli_type(field.annotation)
        default = (defaults or {}).get(name, ... if field.is_required() else field.get_default(call_default_factory=True))
        help_text = (field.description or "") + (f" ({choices})" if choices else "")
        out.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann,
                                     default=typer.Option(default, option_name(name, field), help=help_text)))
    return out


def checked_config(config: type[BaseModel], fields: dict[str, Any], **extra: Any) -> BaseModel:
    """``config`` from the command's option values; its first problem an input error naming the option."""
    try:
        return config.model_validate({**extra, **fields})
    except ValidationError as e:
        err = e.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else ""
        field = config.model_fields.get(name)
        raise InputError(err["msg"].removeprefix("Value error, "), field=option_name(name, field) if name else None) from None
