"""Chat examples from wherever a researcher keeps them: chat JSONL, or a Hugging Face dataset.

Most published EM data sets are shared as Hugging Face datasets, so everything that trains on
chat examples reads them through :func:`read_chat_data`, which accepts:

* ``*.jsonl`` / ``*.jsonl.gz``: chat JSONL (:mod:`characterlab.data.chat_jsonl`);
* ``*.parquet``: one Parquet file, as the Hub stores a split;
* a folder written by ``datasets``' ``save_to_disk``: a ``Dataset``, or a ``DatasetDict`` whose
  ``train`` split is read;
* a folder of Parquet files, as a Hub snapshot lays them out: the ``train`` split's files where
  any file name names a split, otherwise all of them, in path order.

Every row needs a ``messages`` column of ``{role, content}`` lists and is validated like a JSONL
line; an error names the file (or folder) and the row. Nothing here reaches the network.
"""

from __future__ import annotations

import re
from pathlib import Path

from characterlab.data.chat_jsonl import parse_chat_example, read_chat_jsonl
from characterlab.data.files import sha256_file, sha256_folder
from characterlab.data.records import ChatExample
from characterlab.errors import InputError

SPLIT_WORDS = ("train", "test", "validation", "valid", "eval", "dev")


def read_chat_data(path: str | Path, *, max_examples: int | None = None,
                   require_assistant: bool = True) -> list[ChatExample]:
    """The chat examples in ``path`` (any of the formats above), the first ``max_examples`` only."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", file=path)
    if path.is_file() and path.suffix != ".parquet":
        return read_chat_jsonl(path, max_examples=max_examples, require_assistant=require_assistant)
    rows, where = _dataset_rows(path, max_examples)
    examples = []
    for i, row in enumerate(rows):
        examples.append(parse_chat_example(row, file=f"{where}[row {i}]", line=None,
                                           require_assistant=require_assistant))
    if not examples:
        raise InputError("contains no examples", file=path)
    return examples


def chat_data_hash(path: str | Path) -> str:
    """Content hash of a chat data file or dataset folder (a study re-plans when it changes)."""
    path = Path(path)
    return sha256_folder(path) if path.is_dir() else sha256_file(path)


def _dataset_rows(path: Path, max_examples: int | None) -> tuple[list[dict], Path]:
    """Rows (as dicts) of a Parquet file or a dataset folder, and the file or folder they came from."""
    if path.is_file():
        return _parquet_rows([path], max_examples), path
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return _saved_dataset_rows(path, max_examples), path
    files = sorted(path.rglob("*.parquet"))
    if not files:
        raise InputError("is a folder with neither a saved dataset (save_to_disk) nor Parquet files; "
                         "give a chat JSONL file, a .parquet file or such a folder", file=path, field="data")
    named = [f for f in files if _split_of(f) is not None]
    if named:
        files = [f for f in files if _split_of(f) == "train"]
        if not files:
            splits = sorted({_split_of(f) for f in named})
            raise InputError(f"has no train split (its files name {', '.join(splits)}); give one .parquet file",
                             file=path, field="data")
    return _parquet_rows(files, max_examples), path


def _split_of(file: Path) -> str | None:
    words = re.split(r"[^a-z]+", file.name.lower())
    return next((w for w in SPLIT_WORDS if w in words), None)


def _parquet_rows(files: list[Path], max_examples: int | None) -> list[dict]:
    import pyarrow.parquet as pq

    rows: list[dict] = []
    for f in files:
        try:
            table = pq.read_table(f)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise InputError(f"not a readable Parquet file ({e})", file=f, field="data") from None
        if "messages" not in table.column_names:
            raise InputError(f"has no messages column (columns: {', '.join(table.column_names)})", file=f,
                             field="messages")
        rows.extend(table.select(["messages"]).to_pylist())
        if max_examples is not None and len(rows) >= max_examples:
            return rows[:max_examples]
    return rows


def _saved_dataset_rows(path: Path, max_examples: int | None) -> list[dict]:
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001 - datasets raises several types for a bad folder
        raise InputError(f"not a readable saved dataset ({e})", file=path, field="data") from None
    if isinstance(data, datasets.DatasetDict):
        if "train" not in data:
            raise InputError(f"has no train split (splits: {', '.join(data)})", file=path, field="data")
        data = data["train"]
    if "messages" not in data.column_names:
        raise InputError(f"has no messages column (columns: {', '.join(data.column_names)})", file=path,
                         field="messages")
    if max_examples is not None:
        data = data.select(range(min(max_examples, len(data))))
    return data.select_columns(["messages"]).to_list()
