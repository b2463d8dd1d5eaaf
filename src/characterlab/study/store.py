"""The run folder: everything a study produced, and the record of which units are finished.

Layout::

    RUN/
      study.yaml        the spec as given
      units.sqlite      units (key, status, result, timings, where each ran, its peak memory) and
                        their rows (generations, judgements, training examples); WAL mode
      adapters/<key>/   files a unit made (PEFT adapter folders)
      results.json      metrics with CIs, per condition (see report.py)
      report.html       self-contained report; plots/*.png

A unit is finished when, and only when, its row in ``units`` says ``done``. Its files are moved
into place (atomic rename) *before* that, and its rows are written in the same transaction that
marks it done, so a process killed at any instant (SIGKILL included) leaves either a finished unit
or none: never a half-written one, a lost row or a duplicated one. Re-running skips finished units.

The store deletes only what it wrote: under ``adapters/``, the folder of a unit it recorded that is
not done, and the temp names of its units' folders (``.<key>.<random>.tmp``, ``.<key>.old``).
Anything else there (a user's file, another run) is left alone, and a run folder is never placed
inside another one or around one (:func:`check_not_nested`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from characterlab.data.files import json_text, staged_dir
from characterlab.errors import InputError
from characterlab.study.plan import Unit

DB_FILE = "units.sqlite"
ADAPTERS = "adapters"
SPEC_FILE = "study.yaml"
BASE_DIR_FILE = ".base_dir"  # the folder relative paths of the study were resolved against
RESULTS_FILE = "results.json"
REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
SAMPLES_FILE = "samples.jsonl"  # ``characterlab eval``: the scored rows

_SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, label TEXT NOT NULL, params TEXT NOT NULL, deps TEXT NOT NULL,
    status TEXT NOT NULL, result TEXT, started REAL, finished REAL, seconds REAL, attempts INTEGER DEFAULT 0,
    error TEXT, host TEXT, peak_rss_mb REAL
);
CREATE TABLE IF NOT EXISTS rows (
    unit_key TEXT NOT NULL, idx INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (unit_key, idx)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, finished REAL, code_version TEXT,
    executor TEXT, units_run INTEGER DEFAULT 0, units_reused INTEGER DEFAULT 0
);
"""


LOCK_FILE = ".lock"
FILE_KINDS = ("train", "reward", "vector")  # units whose product is their adapters/<key>/ folder


class DiskFullError(InputError):
    """The disk (or the database's quota) filled while the run folder was written. Executors stop
    on it instead of failing unit after unit: nothing more can be saved until space is freed."""


def _is_disk_full(e: BaseException) -> bool:
    if isinstance(e, sqlite3.OperationalError):
        return getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(e)
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def disk_full_reported(folder: str | Path, what: str) -> Iterator[None]:
    """A full disk while writing ``folder`` as one line (a :class:`DiskFullError`) naming it,
    instead of the traceback of whichever write met it first."""
    try:
        yield
    except BaseException as e:
        if not _is_disk_full(e):
            raise
        raise DiskFullError(f"the disk is full while {what}; free space and run the command again (finished "
                            "units are kept)", folder, field="out") from None


def _enclosing_run(folder: Path) -> Path | None:
    """The run folder that ``folder`` is inside of (not ``folder`` itself), if any."""
    for parent in folder.resolve().parents:
        if (parent / DB_FILE).is_file():
            return parent
    return None


def _contained_run(folder: Path) -> Path | None:
    """A run folder somewhere below ``folder``, if any (symbolic links are not followed)."""
    if not folder.is_dir() or (folder / DB_FILE).is_file():
        return None  # a run folder's own subfolders are its own business
    for root, _dirs, files in os.walk(folder):
        if DB_FILE in files:
            return Path(root)
    return None


def check_not_nested(folder: str | Path, field: str = "out") -> None:
    """A run folder (or a merge's folder) is never inside another run folder, nor around one: a
    resume of the outer run must not meet the inner run's files under its own ``adapters/``."""
    folder = Path(folder)
    outer = _enclosing_run(folder)
    if outer is not None:
        raise InputError(f"is inside the run folder {outer}; choose an --out outside any run folder", folder,
                         field=field)
    inner = _contained_run(folder)
    if inner is not None:
        raise InputError(f"contains the run folder {inner}; choose an --out that holds no run folder", folder,
                         field=field)


def _temp_owner(name: str) -> str | None:
    """The unit key a temp name of :func:`~characterlab.data.files.staged_dir` was made for
    (``.<key>.<random>.tmp`` or ``.<key>.old``), or None for any other name."""
    if not name.startswith("."):
        return None
    if name.endswith(".old"):
        return name[1:-len(".old")] or None
    if name.endswith(".tmp") and "." in name[1:-len(".tmp")]:
        return name[1:-len(".tmp")].rsplit(".", 1)[0] or None
    return None


class RunLock:
    """One process per run folder: an exclusive ``flock`` on ``RUN/.lock`` for as long as a run lasts.

    A second process that tries the same folder is refused with the holder's pid; the kernel drops
    the lock when its holder dies (SIGKILL included), so a killed run never leaves the folder locked.
    """

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise InputError(f"another characterlab process (pid {holder}) is running in this folder; wait for it "
                             "or choose another --out", self.path.parent, field="out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None


@dataclass
class UnitOutput:
    """What a unit produces: a small result, rows, and files (relative path -> bytes)."""

    result: dict
    rows: list[dict] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass
class UnitRecord:
    key: str
    kind: str
    label: str
    status: str
    result: dict | None
    seconds: float | None
    started: float | None
    finished: float | None


def _damaged(path: Path, e: sqlite3.DatabaseError | str) -> InputError:
    return InputError(f"the run's database is damaged or not a database ({e}); restore it from a copy, or run "
                      "into a new --out", path, field="out")


class RunStore:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / DB_FILE
        try:
            self.db = sqlite3.connect(path, timeout=60, isolation_level=None)
        except sqlite3.Error as e:
            raise InputError(f"cannot open the run's database: {e}", path, field="out") from None
        try:
            with disk_full_reported(self.folder, "opening the run's database"):
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.executescript(_SCHEMA)
                columns = {row[1] for row in self.db.execute("PRAGMA table_info(units)")}
                if "peak_rss_mb" not in columns:  # a run folder written before units recorded their memory
                    self.db.execute("ALTER TABLE units ADD COLUMN peak_rss_mb REAL")
        except sqlite3.DatabaseError as e:
            self.db.close()
            raise _damaged(path, e) from None
        except InputError:
            self.db.close()
            raise

    def check_integrity(self) -> None:
        """Every page of the database readable (``PRAGMA quick_check``): a truncated or corrupt
        ``units.sqlite`` is refused when a run starts, not met by a query hours into it."""
        path = self.folder / DB_FILE
        try:
            problems = [line for (row,) in self.db.execute("PRAGMA quick_check(3)") for line in str(row).splitlines()]
        except sqlite3.DatabaseError as e:
            raise _damaged(path, e) from None
        if problems != ["ok"]:
            raise _damaged(path, "; ".join(problems[:3]))  # one line: the first few problems

    def close(self) -> None:
        self.db.close()

    # -- units --------------------------------------------------------------------------------
    def status(self, key: str) -> str | None:
        row = self.db.execute("SELECT status FROM units WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def is_done(self, key: str) -> bool:
        return self.status(key) == "done"

    def done_keys(self) -> set[str]:
        return {k for (k,) in self.db.execute("SELECT key FROM units WHERE status='done'")}

    def mark_started(self, unit: Unit) -> None:
        with disk_full_reported(self.folder, f"recording that {unit.label} started"):
            self._mark_started(unit)

    def _mark_started(self, unit: Unit) -> None:
        self.db.execute(
            "INSERT INTO units (key, kind, label, params, deps, status, started, attempts, host) "
            "VALUES (?, ?, ?, ?, ?, 'running', ?, 1, ?) "
            "ON CONFLICT(key) DO UPDATE SET status='running', started=excluded.started, attempts=attempts+1, "
            "error=NULL, host=excluded.host WHERE status != 'done'",
            (unit.key, unit.kind, unit.label, json.dumps(unit.params, sort_keys=True), json.dumps(list(unit.deps)),
             time.time(), socket.gethostname()))

    def mark_failed(self, unit: Unit, error: str) -> None:
        with disk_full_reported(self.folder, f"recording that {unit.label} failed"):
            self.db.execute("UPDATE units SET status='failed', error=?, finished=? WHERE key=? AND status != 'done'",
                            (error[-4000:], time.time(), unit.key))

    def commit(self, unit: Unit, output: UnitOutput, seconds: float, peak_rss_mb: float | None = None,
               host: str | None = None) -> None:
        """Files into place, then rows and the done mark in one transaction; ``peak_rss_mb`` is the
        unit's own peak resident memory where the executor measured it, ``host`` where it ran
        (default: this machine; a Ray worker's machine and node). A full disk is a
        :class:`DiskFullError` (SQLite has then rolled the transaction back itself)."""
        with disk_full_reported(self.folder, f"saving {unit.label}"):
            self._commit(unit, output, seconds, peak_rss_mb, host or socket.gethostname())

    def _commit(self, unit: Unit, output: UnitOutput, seconds: float, peak_rss_mb: float | None, host: str) -> None:
        if output.files:
            with staged_dir(self.files_dir(unit.key), overwrite=True) as stage:
                for rel, data in output.files.items():
                    target = stage / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
        now = time.time()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("DELETE FROM rows WHERE unit_key=?", (unit.key,))
            self.db.executemany("INSERT INTO rows (unit_key, idx, data) VALUES (?, ?, ?)",
                                [(unit.key, i, json_text(r)) for i, r in enumerate(output.rows)])
            self.db.execute(
                "INSERT INTO units (key, kind, label, params, deps, status, result, started, finished, seconds, host, "
                "peak_rss_mb) VALUES (?, ?, ?, ?, ?, 'done', ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET status='done', result=excluded.result, finished=excluded.finished, "
                "seconds=excluded.seconds, peak_rss_mb=excluded.peak_rss_mb, host=excluded.host, error=NULL",
                (unit.key, unit.kind, unit.label, json.dumps(unit.params, sort_keys=True), json.dumps(list(unit.deps)),
                 json_text(output.result, where=f"unit {unit.key}"), now - seconds, now, seconds, host, peak_rss_mb))
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:  # SQLite ends it itself on some errors (a full disk)
                self.db.execute("ROLLBACK")
            raise

    def record(self, key: str) -> UnitRecord | None:
        row = self.db.execute("SELECT key, kind, label, status, result, seconds, started, finished FROM units "
                              "WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        return UnitRecord(row[0], row[1], row[2], row[3], json.loads(row[4]) if row[4] else None, row[5], row[6], row[7])

    def result(self, key: str) -> dict:
        rec = self.record(key)
        if rec is None or rec.status != "done" or rec.result is None:
            raise KeyError(f"unit {key} is not finished")
        return rec.result

    def deps(self, key: str) -> list[str]:
        """The keys of the units ``key`` was computed from (for a metric unit: its judge unit first)."""
        row = self.db.execute("SELECT deps FROM units WHERE key=?", (key,)).fetchone()
        if row is None:
            raise KeyError(f"no unit {key}")
        return json.loads(row[0])

    def params(self, key: str) -> dict:
        """The parameters ``key`` was computed with."""
        row = self.db.execute("SELECT params FROM units WHERE key=?", (key,)).fetchone()
        if row is None:
            raise KeyError(f"no unit {key}")
        return json.loads(row[0])

    def rows(self, key: str) -> list[dict]:
        return [json.loads(d) for (d,) in self.db.execute("SELECT data FROM rows WHERE unit_key=? ORDER BY idx", (key,))]

    def files_dir(self, key: str) -> Path:
        return self.folder / ADAPTERS / key

    def file_bytes(self, key: str) -> dict[str, bytes]:
        root = self.files_dir(key)
        if not root.is_dir():
            return {}
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    def unit_timings(self) -> list[dict]:
        return [{"key": k, "kind": kind, "label": label, "status": status, "seconds": sec, "attempts": att,
                 "peak_rss_mb": rss}
                for k, kind, label, status, sec, att, rss in
                self.db.execute("SELECT key, kind, label, status, seconds, attempts, peak_rss_mb FROM units "
                                "ORDER BY started")]

    # -- runs (one row per invocation: how much was reused) ----------------------------------
    def begin_run(self, code_version: str, executor: str) -> int:
        """Record a new invocation; units left 'running' by a killed one are marked 'interrupted'
        (one process runs a folder at a time)."""
        with disk_full_reported(self.folder, "starting the run"):
            self.db.execute("UPDATE units SET status='interrupted' WHERE status='running'")
            cur = self.db.execute("INSERT INTO runs (started, code_version, executor) VALUES (?, ?, ?)",
                                  (time.time(), code_version, executor))
        return int(cur.lastrowid)

    def end_run(self, run_id: int, units_run: int, units_reused: int) -> None:
        with disk_full_reported(self.folder, "ending the run"):
            self.db.execute("UPDATE runs SET finished=?, units_run=?, units_reused=? WHERE id=?",
                            (time.time(), units_run, units_reused, run_id))

    def runs(self) -> list[dict]:
        cols = ("id", "started", "finished", "code_version", "executor", "units_run", "units_reused")
        return [dict(zip(cols, r)) for r in self.db.execute(f"SELECT {', '.join(cols)} FROM runs ORDER BY id")]

    def known_keys(self) -> dict[str, str]:
        """Every unit this store recorded (a unit is recorded when it starts), key -> status."""
        return dict(self.db.execute("SELECT key, status FROM units"))

    def remove_orphan_files(self) -> None:
        """Folders of units that never finished (a kill between the rename and the commit) and the
        temp folders of its own units; nothing it did not write (see the module's docstring)."""
        root = self.folder / ADAPTERS
        if not root.is_dir():
            return
        known = self.known_keys()
        for p in root.iterdir():
            if p.is_symlink() or not p.is_dir():
                continue
            unfinished = p.name in known and known[p.name] != "done"
            if unfinished or _temp_owner(p.name) in known:
                shutil.rmtree(p, ignore_errors=True)

    def missing_files(self, units: list[Unit]) -> list[Unit]:
        """Finished units of ``units`` whose product is a folder (train, reward, vector) that is gone
        or empty: a deleted ``adapters/<key>/`` that dependants still to run would not find."""
        done = self.done_keys()
        return [u for u in units if u.kind in FILE_KINDS and u.key in done
                and not (self.files_dir(u.key).is_dir() and any(self.files_dir(u.key).iterdir()))]

    def reopen(self, key: str, reason: str) -> None:
        """Mark a finished unit to be run again (its status is no longer ``done``)."""
        with disk_full_reported(self.folder, "reopening a unit"):
            self.db.execute("UPDATE units SET status='reopened', error=? WHERE key=?", (reason, key))
