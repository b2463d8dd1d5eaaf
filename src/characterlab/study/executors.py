"""Executors run the units of a plan that are not finished yet, and commit each result to the store.

* :class:`LocalExecutor`: in this process, one unit at a time in dependency order.
* :class:`RayExecutor`: each unit is a Ray task with the CPUs/GPUs it declares, submitted as soon
  as its inputs are finished. Inputs and outputs travel by value (rows and adapter files), so
  workers need no shared filesystem; only the driver writes the run folder. ``ray.init()`` starts
  a local Ray by default; pass an address for a cluster. A worker that dies under a unit (SIGKILL,
  the OOM killer, a lost node) is Ray's to retry, elsewhere if need be (``retries`` times): the
  killed attempt wrote nothing anywhere but its own scratch folder, and the driver commits the one
  attempt that returns, so a retry can neither half-write a unit nor duplicate one. An error the
  unit raises itself is not retried (it fails the unit; the next run retries it). Each unit's
  record says where it ran (``host``: the worker's machine and Ray node).

They differ only in where a unit runs. What happens around it is one loop's bookkeeping,
:class:`UnitBook`, shared by both: reused units counted, the dependants of a failure skipped and
reported, a ``check_unit`` given by the runner called with each unit and the store just before the
unit runs (in this process, for Ray too; what it raises fails that unit like an error of its own,
before any of its work), each unit's own peak memory (measured where it ran: in this process, or
in the Ray worker) committed with it, and the progress shown: a bar per unit and one for the
study, or one line per finished unit off a terminal. Both finish everything a failure does not
block, and the next run retries the failures. A full disk stops both (:class:`DiskFullError`).
"""

from __future__ import annotations

import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from characterlab.allocator import peak_rss_mb, reset_peak_rss
from characterlab.study.plan import Plan, Unit
from characterlab.study.store import DiskFullError, RunStore, UnitOutput
from characterlab.study.units import DepView, execute_unit


@dataclass
class ExecutionReport:
    run: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # key -> error
    skipped: list[str] = field(default_factory=list)  # dependants of a failure
    seconds: float = 0.0


UnitCheck = Callable[[Unit, RunStore], None]  # a check made just before a unit runs; raises to fail it


class PlainProgress:
    """Progress off a terminal (a log file, CI, nohup): one line per finished unit, with the time it
    took, the time so far and an estimate of the time left. rich hides its live bars there."""

    def __init__(self, total: int, reused: int, stream=None):
        self.total, self.done, self.start = total, 0, time.time()
        self.stream = stream or sys.stderr
        self._print(f"study: {total} units to run, {reused} reused")

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def finished(self, unit: Unit, seconds: float, status: str = "done", peak_rss_mb: float | None = None) -> None:
        self.done += 1
        elapsed = time.time() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        memory = f", peak {peak_rss_mb / 1024:.2f} GB" if peak_rss_mb else ""
        self._print(f"[{self.done}/{self.total}] {status} {unit.kind} {unit.label} in {_hms(seconds)}{memory}; "
                    f"elapsed {_hms(elapsed)}, about {_hms(eta)} left")


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def plain_progress_wanted(progress: bool) -> bool:
    return progress and not sys.stderr.isatty()


def run_measured(unit: Unit, views: dict[str, DepView], workdir: Path, backend: str,
                 timeout: float | None) -> tuple[UnitOutput, float | None]:
    """Run ``unit`` in this process and return its output with its own peak resident memory (MB;
    None where the kernel gives no per-unit window). The local executor calls it in the driver,
    the Ray executor in the worker, so both measure the unit where it ran."""
    measured = reset_peak_rss()  # this unit's own peak, not the process's so far
    out = execute_unit(unit, views, workdir, progress=False, backend=backend, timeout=timeout)
    return out, peak_rss_mb() if measured else None


class UnitBook:
    """The bookkeeping of one executor run, whatever runs the units: which units are to run and which
    are reused, which failed and which are skipped because a unit they read failed, the report, and
    the progress display. An executor asks :meth:`ready` before it starts a unit, then reports
    :meth:`done` or :meth:`failed`."""

    def __init__(self, plan: Plan, store: RunStore, progress: bool, title: str, check_unit: UnitCheck | None):
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.store, self.check_unit = store, check_unit
        self.report = ExecutionReport()
        self.t0 = time.time()
        self.todo: list[Unit] = []
        for u in plan.ordered():
            if store.is_done(u.key):
                self.report.reused.append(u.key)
            else:
                self.todo.append(u)
        self.bad: set[str] = set()  # failed, or skipped because of a failure
        self.plain = PlainProgress(len(self.todo), len(self.report.reused)) if plain_progress_wanted(progress) else None
        self.bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                             TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), TimeRemainingColumn(),
                             disable=not progress or self.plain is not None, transient=False)
        self.overall = self.bars.add_task(f"{title} ({len(self.report.reused)} units reused)", total=len(self.todo))
        self._rows: dict[str, tuple] = {}  # key -> (its bar, its start time)

    def __enter__(self) -> UnitBook:
        self.bars.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.__exit__(*exc)
        self.report.seconds = time.time() - self.t0

    def blocked(self, unit: Unit) -> bool:
        """Whether a unit ``unit`` reads failed (or was skipped); if so it is skipped and reported."""
        if not any(d in self.bad for d in unit.deps):
            return False
        self.report.skipped.append(unit.key)
        self.bad.add(unit.key)
        self._finished(unit, 0.0, "skipped")
        return True

    def ready(self, unit: Unit) -> bool:
        """Mark ``unit`` started and make the runner's check; False (the unit failed, and its
        dependants will be skipped) if the check raised."""
        self.store.mark_started(unit)
        self._rows[unit.key] = (self.bars.add_task(f"  {unit.kind:8s} {unit.label}", total=1), time.time())
        if self.check_unit is not None:
            try:
                self.check_unit(unit, self.store)
            except DiskFullError:
                raise
            except Exception as e:  # noqa: BLE001 - as a failure of the unit itself
                self.failed(unit, e)
                return False
        return True

    def done(self, unit: Unit, out: UnitOutput, peak: float | None, host: str | None = None) -> None:
        """Commit a finished unit (``host``: where it ran, if not in this process); a commit that
        fails (other than a full disk) fails the unit."""
        try:
            self.store.commit(unit, out, self.seconds(unit), peak, host=host)
        except DiskFullError:  # nothing more can be saved: stop, with one line
            raise
        except Exception as e:  # noqa: BLE001
            self.failed(unit, e)
            return
        self.report.run.append(unit.key)
        self._finished(unit, self.seconds(unit), "done", peak)

    def failed(self, unit: Unit, error: Exception) -> None:
        """A unit that failed: its traceback in the store, one line in the report, its dependants blocked.
        Called from the ``except`` clause that caught ``error``."""
        self.store.mark_failed(unit, traceback.format_exc())
        self.report.failed[unit.key] = f"{type(error).__name__}: {error}"
        self.bad.add(unit.key)
        self._finished(unit, self.seconds(unit), "FAILED")

    def seconds(self, unit: Unit) -> float:
        return time.time() - self._rows[unit.key][1] if unit.key in self._rows else 0.0

    def _finished(self, unit: Unit, seconds: float, status: str, peak: float | None = None) -> None:
        if unit.key in self._rows:
            self.bars.update(self._rows.pop(unit.key)[0], completed=1)
        self.bars.advance(self.overall)
        if self.plain:
            self.plain.finished(unit, seconds, status, peak)


def _local_views(unit: Unit, plan: Plan, store: RunStore) -> dict[str, DepView]:
    views = {}
    for k in unit.deps:
        files = store.files_dir(k)
        views[k] = DepView(plan.units[k].kind, plan.units[k].params, store.result(k), store.rows(k),
                           files if files.is_dir() else None)
    return views


class LocalExecutor:
    name = "local"

    def __init__(self, progress: bool = True, backend: str = "auto", timeout: float | None = None,
                 check_unit: UnitCheck | None = None):
        self.progress = progress
        self.backend = backend
        self.timeout = timeout
        self.check_unit = check_unit

    def run(self, plan: Plan, store: RunStore) -> ExecutionReport:
        with UnitBook(plan, store, self.progress, "study", self.check_unit) as book:
            for u in book.todo:
                if book.blocked(u) or not book.ready(u):
                    continue
                try:
                    with tempfile.TemporaryDirectory(prefix="characterlab-unit-") as wd:
                        out, peak = run_measured(u, _local_views(u, plan, store), Path(wd), self.backend, self.timeout)
                except DiskFullError:
                    raise
                except Exception as e:  # noqa: BLE001 - one failed unit must not lose the others' work
                    book.failed(u, e)
                    continue
                book.done(u, out, peak)
        return book.report


RAY_RETRIES = 2  # a unit whose worker dies runs at most three times before it fails


def ray_task_name(unit: Unit) -> str:
    """A unit's Ray task name, its key first: ``ray list tasks`` and the worker's process title
    (``ray::NAME`` while it runs the unit) say which unit a worker holds."""
    return f"{unit.key} {unit.label}"


def ray_worker_place() -> str:
    """Where this Ray task runs, for the unit's ``host``: the machine and the Ray node, since one
    machine may hold several nodes."""
    import ray

    return f"{socket.gethostname()} ray:{ray.get_runtime_context().get_node_id()[:12]}"


def _ray_execute(unit: Unit, payload: dict[str, dict], backend: str = "auto",
                 timeout: float | None = None) -> tuple[UnitOutput, float | None, str]:
    """Body of one Ray task: materialise the inputs' files, run the unit, return its output, its
    peak memory in the worker, and where it ran. It writes only its own scratch folder, so a
    worker killed under it leaves nothing the retry or the run folder could meet."""
    with tempfile.TemporaryDirectory(prefix="characterlab-ray-") as wd:
        root = Path(wd)
        views = {}
        for k, p in payload.items():
            files_dir = None
            if p["files"]:
                files_dir = root / "deps" / k
                for rel, data in p["files"].items():
                    (files_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                    (files_dir / rel).write_bytes(data)
            views[k] = DepView(p["kind"], p["params"], p["result"], p["rows"], files_dir)
        scratch = root / "work"
        scratch.mkdir()
        out, peak = run_measured(unit, views, scratch, backend, timeout)
        return out, peak, ray_worker_place()


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, progress: bool = True, backend: str = "auto",
                 timeout: float | None = None, check_unit: UnitCheck | None = None, retries: int = RAY_RETRIES):
        self.address = address
        self.retries = retries
        self.progress = progress
        self.backend = backend
        self.timeout = timeout
        self.check_unit = check_unit

    def run(self, plan: Plan, store: RunStore) -> ExecutionReport:
        try:
            import ray
        except ImportError:
            from characterlab.errors import InputError

            raise InputError("the ray executor needs Ray: pip install 'characterlab[ray]'", field="executor") from None
        started_here = not ray.is_initialized()
        if started_here:
            self._connect(ray)
        try:
            return self._run(ray, plan, store)
        finally:
            if started_here:
                ray.shutdown()

    def _connect(self, ray) -> None:
        """Start a local Ray, or join the cluster at ``address``; a cluster that cannot be joined is
        an input error naming the address and, where the cluster refused the token, the fix."""
        try:
            ray.init(address=self.address, include_dashboard=False, logging_level="warning", log_to_driver=False,
                     configure_logging=False)
        except ConnectionError as e:
            if self.address is None:
                raise
            from characterlab.errors import InputError

            raise InputError(f"cannot join the Ray cluster at {self.address}: {e}{_auth_hint(e)}",
                             field="address") from None

    def _run(self, ray, plan: Plan, store: RunStore) -> ExecutionReport:
        remote = ray.remote(_ray_execute)
        with UnitBook(plan, store, self.progress, "study on ray", self.check_unit) as book:
            waiting = list(book.todo)
            running: dict = {}  # ObjectRef -> unit
            while waiting or running:
                for u in list(waiting):
                    if book.blocked(u):
                        waiting.remove(u)
                    elif all(store.is_done(d) for d in u.deps):
                        waiting.remove(u)
                        if not book.ready(u):
                            continue
                        payload = {k: {"kind": plan.units[k].kind, "params": plan.units[k].params,
                                       "result": store.result(k), "rows": store.rows(k),
                                       "files": store.file_bytes(k)} for k in u.deps}
                        ref = remote.options(name=ray_task_name(u), num_cpus=u.resources.cpus,
                                             num_gpus=u.resources.gpus, max_retries=self.retries,
                                             retry_exceptions=False).remote(u, payload, self.backend, self.timeout)
                        running[ref] = u
                if not running:
                    continue
                finished, _ = ray.wait(list(running), num_returns=1)
                for ref in finished:
                    u = running.pop(ref)
                    try:
                        out, peak, host = ray.get(ref)
                    except Exception as e:  # noqa: BLE001 - the unit's error, or its worker died past its retries
                        book.failed(u, e)
                        continue
                    book.done(u, out, peak, host)
        return book.report


def _auth_hint(error: BaseException) -> str:
    """The fix when a cluster refused this process's token: ``ray start`` turns token
    authentication on by itself where ``~/.ray/auth_token`` exists (an earlier local Ray made it),
    while a process that joins it does not unless told."""
    chain: list[BaseException] = []
    link: BaseException | None = error
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    if not any("token" in str(e).lower() for e in chain):
        return ""
    return ("; the cluster uses token authentication: set RAY_AUTH_MODE=token here, with the cluster's token "
            "(~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN)")


def make_executor(name: str, address: str | None = None, progress: bool = True, backend: str = "auto",
                  timeout: float | None = None, check_unit: UnitCheck | None = None):
    """The executor ``name``; ``backend`` and ``timeout`` (seconds an attempt at an endpoint may
    take) are handed to every unit it runs, outside the units' keys; ``check_unit`` is called
    before each unit runs."""
    if name == "local":
        return LocalExecutor(progress=progress, backend=backend, timeout=timeout, check_unit=check_unit)
    if name == "ray":
        return RayExecutor(address=address, progress=progress, backend=backend, timeout=timeout,
                           check_unit=check_unit)
    from characterlab.errors import InputError

    raise InputError(f"unknown executor {name!r}; use local or ray", field="executor")
