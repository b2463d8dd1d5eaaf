"""Resident memory of a study's units re-run one after another in one process, as a study runs
them; prints one JSON object.

    python bench/unit_memory.py RUN KEY [KEY ...]

RUN is a run folder holding the units (finished) and their inputs; each KEY is re-run from its
finished dependencies into a scratch folder (nothing in RUN is written). After each unit the
freed memory is handed back, as the executor does, and the unit's own peak (``VmHWM`` since the
unit started) and the resting RSS are recorded: a unit's peak inside a study is its own working
set plus what earlier units left resting. The diversity study's memory figures
(docs/results/diversity.md) are this on seed 2's content-free chain (the first unit a DPO, so its
peak is a fresh process's) followed by the next character's DPO unit.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

from characterlab.allocator import keep_freed_memory, peak_rss_mb, release_freed_memory, reset_peak_rss
from characterlab.study.plan import Unit
from characterlab.study.store import RunStore
from characterlab.study.units import DepView, execute_unit


def resting_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def main(run: str, keys: list[str]) -> dict:
    keep_freed_memory()  # as the CLI does
    store = RunStore(run)
    units = []
    start_rss = resting_rss_mb()
    for key in keys:
        rec = store.record(key)
        if rec is None or rec.status != "done":
            sys.exit(f"error: unit {key} is not a finished unit of {run}")
        deps = store.deps(key)
        views = {}
        for k in deps:
            files = store.files_dir(k)
            views[k] = DepView(store.record(k).kind, store.params(k), store.result(k), store.rows(k),
                               files if files.is_dir() else None)
        unit = Unit(key=key, kind=rec.kind, params=store.params(key), deps=tuple(deps), label=rec.label)
        reset_peak_rss()
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="unit-memory-") as wd:
            execute_unit(unit, views, Path(wd))  # hands freed memory back when it returns
        peak = peak_rss_mb()
        release_freed_memory()
        units.append({"key": key, "label": rec.label, "seconds": round(time.perf_counter() - t0, 1),
                      "peak_mb": peak, "resting_mb_after": round(resting_rss_mb())})
    store.close()
    return {"run": run, "resting_mb_before": round(start_rss), "units": units}


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    print(json.dumps(main(sys.argv[1], sys.argv[2:]), indent=2))
