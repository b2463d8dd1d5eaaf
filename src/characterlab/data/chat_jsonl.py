"""Chat JSONL (``.jsonl`` or ``.jsonl.gz``): one ``{"messages": [{role, content}, ...]}`` per line.

This is the fine-tuning format of the EM literature (Betley et al., Turner et al.). Reading is
strict: the first bad line stops the read with an :class:`InputError` naming file, line and
field, because a silently skipped example changes what a study trained on.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from characterlab.data.files import atomic_write_bytes, decode_line, load_json
from characterlab.data.records import ROLES, ChatExample, Message
from characterlab.errors import InputError


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Lines split at ``\\n`` only (binary reads: U+2028 inside a string is not a line end)."""
    try:
        with _open_bytes(path) as f:
            for lineno, raw in enumerate(f, start=1):
                yield lineno, decode_line(raw, path, lineno)
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    except IsADirectoryError:
        raise InputError("is a folder, not a file", file=path) from None
    except (OSError, EOFError) as e:
        raise InputError(f"cannot read: {e}", file=path) from None


def parse_chat_example(obj: object, *, file: Path | str, line: int | None, require_assistant: bool = True) -> ChatExample:
    """Validate one decoded JSON object as a chat example."""
    if not isinstance(obj, dict):
        raise InputError(f"expected a JSON object, got {type(obj).__name__}", file=file, line=line)
    if "messages" not in obj:
        raise InputError("missing", file=file, line=line, field="messages")
    raw = obj["messages"]
    if not isinstance(raw, list) or not raw:
        raise InputError("must be a non-empty list of {role, content}", file=file, line=line, field="messages")
    messages = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise InputError("must be an object with role and content", file=file, line=line, field=where)
        role = m.get("role")
        if role not in ROLES:
            raise InputError(f"must be one of {', '.join(ROLES)}, got {role!r}", file=file, line=line, field=f"{where}.role")
        content = m.get("content")
        if not isinstance(content, str):
            raise InputError(
                f"must be a string, got {type(content).__name__}", file=file, line=line, field=f"{where}.content"
            )
        messages.append(Message(role=role, content=content))
    example = ChatExample(messages=tuple(messages))
    if require_assistant and not example.has_assistant_turn:
        raise InputError("has no assistant turn, so there is nothing to train on", file=file, line=line, field="messages")
    return example


def read_chat_jsonl(path: str | Path, *, max_examples: int | None = None, require_assistant: bool = True) -> list[ChatExample]:
    """Read and validate a chat JSONL file; blank lines are allowed, anything else must be valid."""
    path = Path(path)
    examples: list[ChatExample] = []
    for lineno, line in _iter_lines(path):
        if not line.strip():
            continue
        obj = load_json(line, path, lineno)
        examples.append(parse_chat_example(obj, file=path, line=lineno, require_assistant=require_assistant))
        if max_examples is not None and len(examples) >= max_examples:
            break
    if not examples:
        raise InputError("contains no examples", file=path)
    return examples


def write_chat_jsonl(path: str | Path, examples: Iterable[ChatExample]) -> None:
    text = "".join(json.dumps({"messages": e.to_dicts()}, ensure_ascii=False, allow_nan=False) + "\n" for e in examples)
    data = text.encode("utf-8")
    atomic_write_bytes(path, gzip.compress(data) if Path(path).suffix == ".gz" else data)


def hash_examples(examples: Iterable[ChatExample]) -> str:
    """Content hash of the examples (not of the file's bytes), so .gz and plain agree."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps(e.to_dicts(), ensure_ascii=False, sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()
