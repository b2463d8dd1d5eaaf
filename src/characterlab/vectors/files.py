"""A persona-vector folder on disk: ``vectors.safetensors`` (one row per layer, ``(L + 1, hidden)``)
and ``meta.json``. Its own small module so that training (a persona vector steers, ablates or
monitors a fine-tune) can read one without importing extraction and its judges."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from characterlab.data.files import load_json, read_text
from characterlab.errors import InputError

VECTORS_FILE = "vectors.safetensors"
META_FILE = "meta.json"


def load_persona_vector(folder: str | Path) -> tuple[np.ndarray, dict]:
    """The vectors of every layer and their metadata; a folder that is not one is an input error."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    if not (folder / VECTORS_FILE).is_file():
        raise InputError("not a persona-vector folder (no vectors.safetensors)", folder, field="vector")
    meta = load_json(read_text(folder / META_FILE, field="vector"), folder / META_FILE, what=f"unreadable {META_FILE}",
                     field="vector")
    return load_file(str(folder / VECTORS_FILE))["vectors"], meta


@dataclass(frozen=True)
class LayerVector:
    """One layer's row of a persona vector, with where it came from."""

    vector: np.ndarray
    layer: int
    trait: str

    @property
    def unit(self) -> np.ndarray:
        return self.vector / np.linalg.norm(self.vector)


def layer_vector(folder: str | Path, layer: int, field: str = "layer") -> LayerVector:
    """Row ``layer`` of the vector in ``folder``; a layer it does not have is an input error."""
    vectors, meta = load_persona_vector(folder)
    if not 0 <= layer < len(vectors):
        raise InputError(f"the vector has layers 0..{len(vectors) - 1}", folder, field=field)
    return LayerVector(vectors[layer], layer, meta.get("trait", Path(folder).name))
