"""The run folder: everything a study produced, and the record of which units are finished.

Layout::

    RUN/
      study.yaml        the spec as given
      units.sqlite      units (key, status, result, timings) and their rows (generations,
                        judgements, training examples); WAL mode
      adapters/<key>/   files a unit made (PEFT adapter folders)
      results.json      metrics with CIs, per condition (see report.py)
      report.html       self-contained report; plots/*.png

A unit is finished when, and only when, its row in ``units`` says ``done``. Its files are moved
into place (atomic rename) *before* that, and its rows are written in the same transaction that
marks it done, so a process killed at any instant (SIGKILL included) leaves either a finished unit
or none: never a half-written one, a lost row or a duplicated one. Re-running skips finished units.
"""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from characterlab.data.files import json_text, staged_dir
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
        import os

        from characterlab.errors import InputError

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
        import os

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


class RunStore:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.folder / DB_FILE, timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(units)")}
        if "peak_rss_mb" not in columns:  # a run folder written before units recorded their memory
            self.db.execute("ALTER TABLE units ADD COLUMN peak_rss_mb REAL")

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
        self.db.execute(
            "INSERT INTO units (key, kind, label, params, deps, status, started, attempts, host) "
            "VALUES (?, ?, ?, ?, ?, 'running', ?, 1, ?) "
            "ON CONFLICT(key) DO UPDATE SET status='running', started=excluded.started, attempts=attempts+1, "
            "error=NULL, host=excluded.host WHERE status != 'done'",
            (unit.key, unit.kind, unit.label, json.dumps(unit.params, sort_keys=True), json.dumps(list(unit.deps)),
             time.time(), socket.gethostname()))

    def mark_failed(self, unit: Unit, error: str) -> None:
        self.db.execute("UPDATE units SET status='failed', error=?, finished=? WHERE key=? AND status != 'done'",
                        (error[-4000:], time.time(), unit.key))

    def commit(self, unit: Unit, output: UnitOutput, seconds: float, peak_rss_mb: float | None = None) -> None:
        """Files into place, then rows and the done mark in one transaction; ``peak_rss_mb`` is the
        unit's own peak resident memory where the executor measured it."""
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
                "seconds=excluded.seconds, peak_rss_mb=excluded.peak_rss_mb, error=NULL",
                (unit.key, unit.kind, unit.label, json.dumps(unit.params, sort_keys=True), json.dumps(list(unit.deps)),
                 json_text(output.result, where=f"unit {unit.key}"), now - seconds, now, seconds, socket.gethostname(),
                 peak_rss_mb))
            self.db.execute("COMMIT")
        except BaseException:
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
        self.db.execute("UPDATE units SET status='interrupted' WHERE status='running'")
        cur = self.db.execute("INSERT INTO runs (started, code_version, executor) VALUES (?, ?, ?)",
                              (time.time(), code_version, executor))
        return int(cur.lastrowid)

    def end_run(self, run_id: int, units_run: int, units_reused: int) -> None:
        self.db.execute("UPDATE runs SET finished=?, units_run=?, units_reused=? WHERE id=?",
                        (time.time(), units_run, units_reused, run_id))

    def runs(self) -> list[dict]:
        cols = ("id", "started", "finished", "code_version", "executor", "units_run", "units_reused")
        return [dict(zip(cols, r)) for r in self.db.execute(f"SELECT {', '.join(cols)} FROM runs ORDER BY id")]

    def remove_orphan_files(self) -> None:
        """Folders of units that never finished (a kill between the rename and the commit)."""
        root = self.folder / ADAPTERS
        if root.is_dir():
            done = self.done_keys()
            for p in root.iterdir():
                if p.is_dir() and p.name not in done:
                    shutil.rmtree(p, ignore_errors=True)
