"""Executors run the units of a plan that are not finished yet, and commit each result to the store.

* :class:`LocalExecutor`: in this process, one unit at a time in dependency order, with a progress
  bar per unit and one for the study (with an ETA).
* :class:`RayExecutor`: each unit is a Ray task with the CPUs/GPUs it declares, submitted as soon
  as its inputs are finished. Inputs and outputs travel by value (rows and adapter files), so
  workers need no shared filesystem; only the driver writes the run folder. ``ray.init()`` starts
  a local Ray by default; pass an address for a cluster.

Both stop dependants of a failed unit, finish everything else, and report the failures; the next
run retries them. A ``check_unit`` given by the runner is called with each unit and the store just
before the unit runs (in this process, for Ray too); what it raises fails that unit like an error
of its own, before any of its work.
"""

from __future__ import annotations

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


def _record_failure(unit: Unit, error: Exception, store: RunStore, report: ExecutionReport, bad: set[str]) -> None:
    """A unit that failed: its traceback in the store, one line in the report, its dependants blocked."""
    store.mark_failed(unit, traceback.format_exc())
    report.failed[unit.key] = f"{type(error).__name__}: {error}"
    bad.add(unit.key)


def _local_views(unit: Unit, plan: Plan, store: RunStore) -> dict[str, DepView]:
    views = {}
    for k in unit.deps:
        files = store.files_dir(k)
        views[k] = DepView(plan.units[k].kind, plan.units[k].params, store.result(k), store.rows(k),
                           files if files.is_dir() else None)
    return views


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


def _blocked(unit: Unit, bad: set[str]) -> bool:
    return any(d in bad for d in unit.deps)


class LocalExecutor:
    name = "local"

    def __init__(self, progress: bool = True, backend: str = "auto", timeout: float | None = None,
                 check_unit: UnitCheck | None = None):
        self.progress = progress
        self.backend = backend
        self.timeout = timeout
        self.check_unit = check_unit

    def run(self, plan: Plan, store: RunStore) -> ExecutionReport:
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        report = ExecutionReport()
        t0 = time.time()
        todo = []
        for u in plan.ordered():
            if store.is_done(u.key):
                report.reused.append(u.key)
            else:
                todo.append(u)
        bad: set[str] = set()
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TimeElapsedColumn(), TimeRemainingColumn())
        plain = PlainProgress(len(todo), len(report.reused)) if plain_progress_wanted(self.progress) else None
        with Progress(*columns, disable=not self.progress or plain is not None, transient=False) as bars:
            overall = bars.add_task(f"study ({len(report.reused)} units reused)", total=len(todo))
            for u in todo:
                if _blocked(u, bad):
                    report.skipped.append(u.key)
                    bad.add(u.key)
                    bars.advance(overall)
                    if plain:
                        plain.finished(u, 0.0, "skipped")
                    continue
                task = bars.add_task(f"  {u.kind:8s} {u.label}", total=1)
                store.mark_started(u)
                start = time.time()
                measured = reset_peak_rss()  # this unit's own peak, not the study's so far
                peak = None
                try:
                    if self.check_unit is not None:
                        self.check_unit(u, store)
                    with tempfile.TemporaryDirectory(prefix="characterlab-unit-") as wd:
                        out = execute_unit(u, _local_views(u, plan, store), Path(wd), progress=False, backend=self.backend,
                                           timeout=self.timeout)
                    peak = peak_rss_mb() if measured else None
                    store.commit(u, out, time.time() - start, peak)
                    report.run.append(u.key)
                    status = "done"
                except DiskFullError:  # nothing more can be saved: stop, with one line
                    raise
                except Exception as e:  # noqa: BLE001 - one failed unit must not lose the others' work
                    _record_failure(u, e, store, report, bad)
                    status = "FAILED"
                bars.update(task, completed=1)
                bars.advance(overall)
                if plain:
                    plain.finished(u, time.time() - start, status, peak)
        report.seconds = time.time() - t0
        return report


def _ray_execute(unit: Unit, payload: dict[str, dict], backend: str = "auto",
                 timeout: float | None = None) -> UnitOutput:
    """Body of one Ray task: materialise the inputs' files, run the unit, return its output."""
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
        return execute_unit(unit, views, scratch, progress=False, backend=backend, timeout=timeout)


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, progress: bool = True, backend: str = "auto",
                 timeout: float | None = None, check_unit: UnitCheck | None = None):
        self.address = address
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
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        report = ExecutionReport()
        t0 = time.time()
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.address, include_dashboard=False, logging_level="warning", log_to_driver=False,
                     configure_logging=False)
        try:
            remote = ray.remote(_ray_execute)
            waiting = [u for u in plan.ordered() if not store.is_done(u.key)]
            report.reused = [u.key for u in plan.ordered() if store.is_done(u.key)]
            running: dict = {}  # ObjectRef -> (unit, start)
            bad: set[str] = set()
            plain = PlainProgress(len(waiting), len(report.reused)) if plain_progress_wanted(self.progress) else None
            with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                          TimeElapsedColumn(), TimeRemainingColumn(), disable=not self.progress or plain is not None) as bars:
                overall = bars.add_task(f"study on ray ({len(report.reused)} units reused)", total=len(waiting))
                while waiting or running:
                    for u in list(waiting):
                        if _blocked(u, bad):
                            waiting.remove(u)
                            report.skipped.append(u.key)
                            bad.add(u.key)
                            bars.advance(overall)
                        elif all(store.is_done(d) for d in u.deps):
                            waiting.remove(u)
                            store.mark_started(u)
                            if not self._passes_check(u, store, report, bad):
                                bars.advance(overall)
                                if plain:
                                    plain.finished(u, 0.0, "FAILED")
                                continue
                            payload = {k: {"kind": plan.units[k].kind, "params": plan.units[k].params,
                                           "result": store.result(k), "rows": store.rows(k),
                                           "files": store.file_bytes(k)} for k in u.deps}
                            ref = remote.options(num_cpus=u.resources.cpus, num_gpus=u.resources.gpus,
                                                 max_retries=0).remote(u, payload, self.backend, self.timeout)
                            running[ref] = (u, time.time())
                    if not running:
                        continue
                    done, _ = ray.wait(list(running), num_returns=1)
                    for ref in done:
                        u, start = running.pop(ref)
                        status = "done"
                        try:
                            store.commit(u, ray.get(ref), time.time() - start)
                            report.run.append(u.key)
                        except DiskFullError:  # nothing more can be saved: stop, with one line
                            raise
                        except Exception as e:  # noqa: BLE001
                            _record_failure(u, e, store, report, bad)
                            status = "FAILED"
                        bars.advance(overall)
                        if plain:
                            plain.finished(u, time.time() - start, status)
        finally:
            if started_here:
                ray.shutdown()
        report.seconds = time.time() - t0
        return report

    def _passes_check(self, unit: Unit, store: RunStore, report: ExecutionReport, bad: set[str]) -> bool:
        """``check_unit`` on the driver before the unit is sent; False (and the unit failed) if it raised."""
        if self.check_unit is None:
            return True
        try:
            self.check_unit(unit, store)
        except DiskFullError:
            raise
        except Exception as e:  # noqa: BLE001 - as a failure inside the task
            _record_failure(unit, e, store, report, bad)
            return False
        return True


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
