"""Fixed choices of the command line, as Enums (typer lists them in ``--help`` and rejects others)."""

from __future__ import annotations

from enum import Enum


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
