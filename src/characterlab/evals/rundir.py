"""The output folder of an evaluation: refuse to clobber results, resume only the same settings."""

from __future__ import annotations

import json
from pathlib import Path

from characterlab.data.files import atomic_write_json
from characterlab.errors import InputError

RESULTS = "results.json"
RUN_CONFIG = "eval_config.json"


def prepare_run_dir(out: str | Path, config: dict, journal: str, overwrite: bool) -> Path:
    """Create ``out``; a journal left by an interrupted run with the same ``config`` is kept for resuming."""
    out = Path(out)
    if (out / RESULTS).exists() and not overwrite:
        raise InputError("already holds results; pass --overwrite or choose another --out", out, field="out")
    out.mkdir(parents=True, exist_ok=True)
    saved = out / RUN_CONFIG
    if saved.is_file() and json.loads(saved.read_text(encoding="utf-8")) != config:
        if not overwrite:
            raise InputError("holds a partial run with different settings; pass --overwrite to start again", out,
                             field="out")
        (out / journal).unlink(missing_ok=True)
    atomic_write_json(saved, config)
    return out
