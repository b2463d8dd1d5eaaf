"""The gold sets characterlab ships: answers of a model labelled by reading (docs/gold-labelling.md).

Each set is a gzipped JSONL of gold rows (``judge label import``), with the question text of
public research data left out (read back by path, ``study/gold_labels.py: with_question_text``),
and a DATASHEET.md beside it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

GOLD_DIR = Path(__file__).parent


def answer_hash(question: str, answer: str) -> str:
    """A short hash of the exact text shown to the reader: a changed answer no longer matches."""
    return hashlib.sha256(f"{question}\x00{answer}".encode()).hexdigest()[:16]


def gold_path(name: str) -> Path:
    """The shipped gold set ``name`` (e.g. ``smollm2-135m-v1``)."""
    return GOLD_DIR / f"{name}.jsonl.gz"


def shipped_gold(model: str) -> tuple[str, list[dict]] | None:
    """The shipped gold sets of answers of ``model`` (their names, joined, and their rows;
    question text not restored: enough to match a run's answers by hash), or None when none ships."""
    import gzip
    import json

    names, rows = [], []
    for path in sorted(GOLD_DIR.glob("*.jsonl.gz")):
        part = [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines() if line]
        if part and part[0].get("model") == model:
            names.append(path.name)
            rows += part
    return ("+".join(names), rows) if rows else None
