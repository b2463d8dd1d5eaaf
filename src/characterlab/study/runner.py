"""``characterlab run``: spec -> plan -> executor -> store -> results.json -> report.html."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from characterlab.data.files import (
    atomic_write_json,
    atomic_write_text,
    check_output_dir,
)
from characterlab.errors import InputError
from characterlab.study.executors import ExecutionReport, make_executor
from characterlab.study.lengths import TrainLengthCheck
from characterlab.study.plan import Plan, Unit, build_plan, code_version
from characterlab.study.report import render_report
from characterlab.study.results import build_results, study_examples
from characterlab.study.spec import StudySpec, load_study, parse_study, with_seeds
from characterlab.study.store import (
    ADAPTERS,
    BASE_DIR_FILE,
    DB_FILE,
    RESULTS_FILE,
    SPEC_FILE,
    RunLock,
    RunStore,
    check_not_nested,
    disk_full_reported,
)

DEFAULT_STUDY = "builtin:quick"


@dataclass
class StudyRun:
    folder: Path
    spec: StudySpec
    plan: Plan
    execution: ExecutionReport
    results: dict | None
    report: Path | None


def resolve_study(study: str | None, out: str | Path | None, resume: bool) -> tuple[StudySpec, str, Path, Path]:
    """The spec, its text, the run folder, and the folder relative data paths are read from."""
    if study is None and resume and out is not None and (Path(out) / SPEC_FILE).is_file():
        path = Path(out) / SPEC_FILE
        text = path.read_text(encoding="utf-8")
        spec = parse_study(text, path)
        # relative paths were resolved against the original file's folder, recorded at first run
        recorded = Path(out) / BASE_DIR_FILE
        base = Path(recorded.read_text(encoding="utf-8").strip()) if recorded.is_file() else Path.cwd()
        return spec, text, Path(out), base
    if study is None and resume:
        raise InputError("--resume without a study needs --out pointing at an existing run folder", field="out")
    source = study or DEFAULT_STUDY
    spec, text = load_study(source)
    base = Path.cwd() if source.startswith("builtin:") else Path(source).resolve().parent
    folder = Path(out) if out is not None else Path("runs") / spec.name
    if resume and not (folder / SPEC_FILE).is_file():
        raise InputError("nothing to resume here (no study.yaml)", folder, field="out")
    return spec, text, folder, base


def run_study(study: str | None = None, out: str | Path | None = None, executor: str = "local",
              address: str | None = None, resume: bool = False, progress: bool = True,
              update: bool = False, backend: str = "auto", seeds: list[int] | None = None,
              timeout: float | None = None, offline: bool = False) -> StudyRun:
    """``characterlab run``: a study file (or a shipped one) into its run folder; ``seeds`` runs it
    at those seeds instead of its own; ``timeout`` replaces the study's ``timeout:``; ``offline``
    (``--offline``) downloads no model."""
    spec, text, folder, base = resolve_study(study, out, resume)
    if seeds is not None:
        spec, text = with_seeds(spec, text, seeds)
    return run_spec(spec, text, folder, base, executor=executor, address=address, progress=progress, update=update,
                    backend=backend, timeout=timeout, offline=offline)


def run_timeout(spec: StudySpec, timeout: float | None) -> float | None:
    """The endpoint timeout a run uses: ``timeout`` (``--timeout``), else the study's ``timeout:``;
    a bad ``--timeout`` is an input error before any work. None leaves each endpoint its default
    (``$CHARACTERLAB_API_TIMEOUT``, else its own)."""
    from characterlab.models.api import endpoint_timeout

    if timeout is not None:
        return endpoint_timeout(timeout)
    return spec.timeout


def check_backend(spec: StudySpec, backend: str) -> None:
    """An engine that cannot run here fails before any unit does (an input error, exit 2)."""
    from characterlab.models.backend import choose_backend
    from characterlab.models.refs import parse_model_ref

    choose_backend(parse_model_ref(spec.model, base_url=spec.base_url), backend)


MODEL_PARAMS = ("model", "teacher", "student", "judge", "judge_spec")  # unit parameters that name a model


def plan_models(plan: Plan) -> list[str]:
    """Every model reference the plan's units load: the study's model, a character's teacher, a
    logprob judge (the study's or a vector's filter), each as written, in order."""
    return [v for u in plan.ordered() for k in MODEL_PARAMS if isinstance(v := u.params.get(k), str)]


def check_models(plan: Plan, offline: bool) -> None:
    """Every ``hf:`` hub model the plan loads is cached, or may be fetched, before any unit runs:
    offline and not cached is one line naming it (:func:`~characterlab.models.hub.check_hub_models`)."""
    from characterlab.models.hub import check_hub_models

    check_hub_models(plan_models(plan), offline=offline)


def check_cache() -> None:
    """The cache folder (``$CHARACTERLAB_CACHE``) usable before any unit needs it: a path that
    cannot be a writable folder is one line naming it, not a failure inside every judge unit."""
    from characterlab.models.embedded import cache_root

    cache_root()


def check_run_folder(folder: Path, text: str, update: bool) -> None:
    """A run folder holds one study: the same one continues; a changed one needs ``update``. It is
    never inside another run folder or around one (a resume of the outer one would meet it)."""
    check_output_dir(folder, "out")
    check_not_nested(folder, "out")
    saved = folder / SPEC_FILE
    if saved.is_file() and not update and saved.read_text(encoding="utf-8") != text:
        raise InputError("holds a run of a different study; pass --update to run the changed study here (finished "
                         "units it shares are reused), or choose another --out", folder, field="out")


def run_spec(spec: StudySpec, text: str, folder: Path, base: Path, executor: str = "local",
             address: str | None = None, progress: bool = True, update: bool = False,
             backend: str = "auto", timeout: float | None = None, offline: bool = False) -> StudyRun:
    """Plan ``spec``, run what is not finished in ``folder``, write results.json and the report.
    ``backend`` is the generation engine of local models (``auto``: vLLM on a GPU that has it);
    ``timeout`` the seconds an attempt at a model or judge endpoint may take (None: the study's
    ``timeout:``, else :func:`~characterlab.models.api.endpoint_timeout`'s default). Like the
    backend it travels to the units as an execution option, never into a unit's key. ``offline``
    (``--offline``, or ``HF_HUB_OFFLINE`` set) downloads no model: each hub model must be cached,
    which is checked here, before any unit; the units then load the cached copies without asking
    the hub (:mod:`characterlab.models.hub`), so the choice need not travel to them."""
    timeout = run_timeout(spec, timeout)
    plan = build_plan(spec, base)  # every reference and file checked before any work
    check_models(plan, offline)
    check_backend(spec, backend)
    check_run_folder(folder, text, update)
    check_cache()
    lengths = TrainLengthCheck(spec, plan)
    if not (folder / DB_FILE).is_file():
        lengths.check_plan(None)  # no run folder is made for a study that cannot train
    folder.mkdir(parents=True, exist_ok=True)
    with RunLock(folder):
        return _run_locked(spec, text, plan, folder, base, executor, address, progress, backend, timeout, lengths)


def redo_missing_files(plan: Plan, store: RunStore) -> list[Unit]:
    """Finished units whose folder (``adapters/<key>/``: an adapter, a reward model, a vector) was
    deleted run again, and say so: the units still to run on top of them would not find it."""
    missing = store.missing_files(plan.ordered())
    for u in missing:
        store.reopen(u.key, f"{ADAPTERS}/{u.key} was missing")
        print(f"{store.folder}: {u.label} was finished but its files ({ADAPTERS}/{u.key}) are missing; it runs "
              "again", file=sys.stderr, flush=True)
    return missing


def _run_locked(spec: StudySpec, text: str, plan: Plan, folder: Path, base: Path, executor: str,
                address: str | None, progress: bool, backend: str, timeout: float | None,
                lengths: TrainLengthCheck) -> StudyRun:
    resumed = (folder / DB_FILE).is_file()
    store = RunStore(folder)  # a damaged database is refused before anything is written
    try:
        store.check_integrity()
        with disk_full_reported(folder, "writing the study into the run folder"):
            atomic_write_text(folder / SPEC_FILE, text)
            atomic_write_text(folder / BASE_DIR_FILE, str(base.resolve()) + "\n")
        store.remove_orphan_files()
        redo_missing_files(plan, store)
        if resumed:  # finished data units' rows are known now too
            lengths.check_plan(store)
        version = code_version()
        run_id = store.begin_run(version, executor)
        t0 = time.time()
        # data that only a unit makes (DPO pairs, introspection) is checked before the unit that trains on it
        execution = make_executor(executor, address=address, progress=progress, backend=backend, timeout=timeout,
                                  check_unit=lengths.check_unit).run(plan, store)
        store.end_run(run_id, len(execution.run), len(execution.reused))
        if execution.failed or execution.skipped:
            return StudyRun(folder, spec, plan, execution, None, None)
        results = build_results(spec, plan, store, version, time.time() - t0, execution.run)
        results["examples"] = study_examples(plan, store, spec)
        with disk_full_reported(folder, f"writing {RESULTS_FILE}"):
            atomic_write_json(folder / RESULTS_FILE, results)
        report = render_report(folder)
        return StudyRun(folder, spec, plan, execution, results, report)
    finally:
        store.close()
