"""Atomic writes: a reader never sees half a file or half a folder."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and an atomic rename.

    The file gets the permissions a plain ``open(..., "w")`` would give (temp files are 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented JSON; NaN or infinity anywhere raises :class:`NotJSONError` naming the file
    and the field, and nothing is written."""
    atomic_write_text(path, strict_json(obj, where=str(path), indent=2, sort_keys=True) + "\n")


@contextmanager
def staged_dir(final: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside ``final``; on success it replaces ``final`` in one rename.

    On any error the temp folder is removed and ``final`` is untouched, so an output folder is
    either absent, the old one, or complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the result should look like a plain mkdir
    try:
        yield tmp
        if final.exists():
            if not overwrite:
                raise FileExistsError(f"{final} appeared while it was being written")
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class NotJSONError(ValueError):
    """A value JSON cannot hold (NaN or infinity), named by where it is; a bug upstream, not bad input."""


def nonfinite_field(obj: Any, path: str = "") -> tuple[str, float] | None:
    """The key path (``a.b[2]``) and value of the first NaN or infinite float in ``obj``, or None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (path, obj)
    if isinstance(obj, dict):
        items = ((f"{path}.{k}" if path else str(k), v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(obj))
    else:
        return None
    return next((found for p, v in items if (found := nonfinite_field(v, p)) is not None), None)


def strict_json(obj: Any, where: str | None = None, **kwargs: Any) -> str:
    """``json.dumps(obj, allow_nan=False, **kwargs)``: JSON has no NaN or infinity, and Python's
    ``json`` would write them as bare ``NaN``/``Infinity``, which other readers reject. Such a value
    raises :class:`NotJSONError` naming ``where`` (a file, a row) and the field instead."""
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError as e:
        found = nonfinite_field(obj)
        if found is None:
            raise
        field, value = found
        place = ": ".join(p for p in (where, f"field '{field}'" if field else None) if p)
        raise NotJSONError(f"{place + ': ' if place else ''}{value} cannot be written as JSON "
                           "(JSON has no NaN or infinity; whatever computed it gave no number)") from e


def undefined_as_null(obj: Any) -> Any:
    """``obj`` with every NaN as None, for figures where NaN means "undefined" (an AUROC over one
    class, a Spearman of a constant, a diverged loss): JSON has no NaN, and null says the same.
    Use it where NaN is an expected outcome; elsewhere :func:`strict_json` refusing NaN finds the bug."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: undefined_as_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [undefined_as_null(v) for v in obj]
    return obj


def json_text(obj: Any, where: str | None = None) -> str:
    """Compact JSON, non-ASCII kept as is; text that is not valid Unicode (a lone surrogate, which
    no UTF-8 file or database can hold) is written as ``\\ud800`` escapes instead, so it round-trips.
    NaN or infinity raises :class:`NotJSONError` (see :func:`strict_json`)."""
    text = strict_json(obj, where, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return strict_json(obj, where, ensure_ascii=True)
    return text


def jsonl_text(rows: Iterable[Any]) -> str:
    """One :func:`json_text` line per row; a NaN names its row (1-based, as a line of the file)."""
    return "".join(json_text(r, where=f"row {i}") + "\n" for i, r in enumerate(rows, 1))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_folder(folder: str | Path) -> str:
    """One hash over every file of a folder (relative names and contents), e.g. an adapter."""
    import hashlib

    folder = Path(folder)
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + b"\0" + sha256_file(p).encode())
    return h.hexdigest()


def read_text(path: str | Path, field: str | None = None, max_bytes: int | None = None) -> str:
    """A file's text as UTF-8; unreadable or undecodable files are input errors naming the byte.
    A file over ``max_bytes`` is an input error before it is read (a wrong file can be gigabytes)."""
    from characterlab.errors import InputError

    path = Path(path)
    try:
        if max_bytes is not None and path.is_file() and (size := path.stat().st_size) > max_bytes:
            raise InputError(f"too large ({size:,} bytes; at most {max_bytes:,})", path, field=field)
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("no such file", path, field=field) from None
    except IsADirectoryError:
        raise InputError("is a folder, not a file", path, field=field) from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}", path, field=field) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(f"not UTF-8 text (byte {e.start})", path, line, field) from None


def check_output_file(path: str | Path, field: str = "output") -> Path:
    """A file we are about to write: not a folder, in a folder that exists (or can be made) and that
    we may write. Checked before the work, so a bad path never costs a finished computation."""
    from characterlab.errors import InputError

    path = Path(path)
    if path.is_dir():
        raise InputError("is a folder; give a file name", path, field=field)
    _check_writable_parent(path, field)
    return path


def check_output_dir(path: str | Path, field: str = "out") -> Path:
    """A folder we are about to fill: not a file, and creatable or writable."""
    from characterlab.errors import InputError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError("is a file; give a folder", path, field=field)
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError("is not writable", path, field=field)
        return path
    _check_writable_parent(path, field)
    return path


def _check_writable_parent(path: Path, field: str) -> None:
    from characterlab.errors import InputError

    parent = path.absolute().parent
    while not parent.exists():  # the nearest folder that exists decides whether the rest can be made
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{parent} is a file, not a folder", path, field=field)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write in {parent}", path, field=field)


def decode_line(raw: bytes, source: str | Path, lineno: int) -> str:
    """One line of a UTF-8 file; undecodable bytes are an input error at that line."""
    from characterlab.errors import InputError

    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start} of the line)", source, lineno) from None


def read_jsonl_objects(path: str | Path, field: str = "input") -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line; a missing file, bad JSON or a non-object names
    the file and line (``field`` names the flag that gave the path)."""
    from characterlab.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path, field=field)
    return parse_jsonl_objects(read_text(path, field=field), path)


def parse_jsonl_objects(text: str, source: str | Path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line of JSONL ``text``; errors name ``source`` and the line.

    Lines end at ``\\n`` only: U+2028, U+2029 and U+0085 are ordinary characters inside JSON strings
    (``str.splitlines`` would cut a record there)."""
    from characterlab.errors import InputError

    rows = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        row = load_json(line, source, lineno)
        if not isinstance(row, dict):
            raise InputError("each line must be a JSON object", source, lineno)
        rows.append((lineno, row))
    return rows


def load_json(text: str, source: str | Path, line: int | None = None, *, what: str | None = None,
              field: str | None = None) -> Any:
    """``json.loads(text)``, where every way it can fail is an input error at its file and line
    (``line`` for one line of a JSONL file; else the decoder's line in ``text``), its message after
    ``what`` (the kind of file, e.g. "unreadable adapter config") and naming ``field`` when given.

    Besides bad JSON, that includes nesting deeper than Python's parser recurses (``[[[[...`` 200,000
    deep on one line), which ``json`` reports as a bare ``RecursionError`` naming nothing."""
    from characterlab.errors import InputError

    def error(reason: str, at: int | None) -> InputError:
        return InputError(f"{what}: {reason}" if what else reason, source, at, field)

    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        where = (line, f" at column {e.colno}") if line is not None else (e.lineno, "")
        raise error(f"not valid JSON ({e.msg}{where[1]})", where[0]) from None
    except RecursionError:
        raise error("not readable JSON: arrays or objects nested too deeply", line) from None
