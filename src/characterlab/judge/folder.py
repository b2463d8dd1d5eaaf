"""The layout of an offline judge folder: one place for its file names.

A judge folder (the shipped ``weights/offline-minilm`` or one made by ``characterlab judge
train``) holds a PEFT adapter of the MiniLM cross-encoder, the head, the calibration and
provenance in ``judge_config.json``, the recorded validation report and the fingerprints of every
row it saw. This module imports nothing heavy, so references can be checked and hashed cheaply.
"""

from __future__ import annotations

from pathlib import Path

from characterlab.models.refs import PEFT_WEIGHTS

CONFIG_FILE = "judge_config.json"
VALIDATION_FILE = "validation.json"  # the recorded validation report, per model
HEAD_FILE = "head.safetensors"
ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = PEFT_WEIGHTS  # inside ADAPTER_DIR
SEEN_KEYS_FILE = "seen_rows.u64"
SHIPPED_DIR = Path(__file__).parent / "weights" / "offline-minilm"


def adapter_weights(folder: Path) -> Path:
    return folder / ADAPTER_DIR / ADAPTER_WEIGHTS
