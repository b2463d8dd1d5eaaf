"""Fixed choices of the command line, as Enums (typer lists them in ``--help`` and rejects others),
and the endpoint timeout every command that calls an endpoint takes."""

from __future__ import annotations

from enum import Enum

TIMEOUT_HELP = ("Seconds one attempt at a request to an openai: endpoint may take (default: "
                "$CHARACTERLAB_API_TIMEOUT, else 120 for a model and 60 for a judge).")


OFFLINE_HELP = ("Download no model: every hf: hub model must already be in the Hugging Face cache ($HF_HOME), "
                "checked before any work (as with HF_HUB_OFFLINE=1). Without it a missing one downloads on first use.")


def checked_timeout(seconds: float | None) -> float | None:
    """``--timeout`` checked before any work: a positive finite number, else an input error naming
    ``timeout``; None leaves each endpoint its default."""
    from characterlab.models.api import endpoint_timeout

    return None if seconds is None else endpoint_timeout(seconds)


class Executor(str, Enum):
    local = "local"
    ray = "ray"


class Backend(str, Enum):
    """Generation engine of local models (models/backend.py)."""

    auto = "auto"
    hf = "hf"
    vllm = "vllm"


class Split(str, Enum):
    train = "train"
    test = "test"


class SolutionKind(str, Enum):
    hack = "hack"
    honest = "honest"
    mixed = "mixed"


class GraderChoice(str, Enum):
    assert_eq = "assert_eq"
    exit_code = "exit_code"
    pytest = "pytest"
    strict = "strict"
    all = "all"


class Level(str, Enum):
    paraphrase = "paraphrase"
    cluster = "cluster"
    random = "random"
    farthest = "farthest"
