"""``characterlab eval <kind>``: one evaluation of one model, as a one-condition study.

The command builds a study (the model as its only condition, the evaluation as its only entry,
one seed) and runs it through the same planner, store and executor as ``characterlab run``. Its
output folder is therefore a run folder: an interrupted evaluation resumes, a finished one is
never computed again, and it gets ``results.json`` and ``report.html``. The judged rows are also
exported as ``samples.jsonl``, one JSON object per answer.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from characterlab.data.files import atomic_write_text, check_output_dir, jsonl_text, load_json, read_text
from characterlab.data.yaml_loader import InputErrors
from characterlab.errors import InputError
from characterlab.evals.registry import get_evaluation
from characterlab.study.plan import build_plan
from characterlab.study.runner import StudyRun, check_models, run_spec
from characterlab.study.spec import parse_study
from characterlab.study.store import (
    DB_FILE,
    RESULTS_FILE,
    SAMPLES_FILE,
    SPEC_FILE,
    RunStore,
    check_not_nested,
)

SAMPLES = SAMPLES_FILE
CONDITION = "model"


def evaluation_study_text(kind: str, fields: dict, model: str, adapter: str | None = None, judge: str = "offline",
                          seed: int = 0, base_url: str | None = None, judge_base_url: str | None = None) -> str:
    """The study YAML of one evaluation of one model (paths absolute, so it reads the same anywhere)."""
    return suite_study_text(f"eval-{kind}", f"characterlab eval {kind}", [_entry(kind, fields)], [], model, adapter,
                            judge, seed, base_url, judge_base_url)


def _entry(kind: str, fields: dict) -> dict:
    """One evaluation of ``kind`` with the fields the user set (unset ones take the defaults)."""
    return {"name": kind, "kind": kind, **{k: v for k, v in fields.items() if v is not None}}


def suite_study_text(name: str, what: str, entries: list[dict], headline: list[str], model: str,
                     adapter: str | None = None, judge: str = "offline", seed: int = 0, base_url: str | None = None,
                     judge_base_url: str | None = None) -> str:
    """The study YAML of some evaluations of one model, averaged into ``headline`` when it names them."""
    description = f"{what} of {model}" + (f" with adapter {Path(adapter).resolve()}" if adapter else "")
    return _study_text(name, description, [(CONDITION, adapter)], entries, headline, model, judge, seed, base_url,
                       judge_base_url)


def checkpoints_study_text(kind: str, fields: dict, model: str, adapters: list[tuple[str, str | None]],
                           seed: int = 0) -> str:
    """The study YAML of one evaluation of several adapters of one model (a policy's checkpoints
    along its run, the base first: it is the study's baseline, so every checkpoint's difference
    from it comes with its Newcombe interval)."""
    return _study_text(f"checkpoints-{kind}", f"characterlab {kind} checkpoints: {kind} along a run of {model}",
                       adapters, [_entry(kind, fields)], [], model, "offline", seed, None, None)


def _study_text(name: str, description: str, conditions: list[tuple[str, str | None]], entries: list[dict],
                headline: list[str], model: str, judge: str, seed: int, base_url: str | None,
                judge_base_url: str | None) -> str:
    conds = [{"name": n, **({"adapter": str(Path(a).resolve())} if a is not None else {})} for n, a in conditions]
    doc = {"name": name, "description": description, "model": model, "seeds": [seed], "judge": judge,
           "conditions": conds, "evaluations": entries}
    if headline:
        doc["headline"] = headline
    if base_url:
        doc["base_url"] = base_url
    if judge_base_url:
        doc["judge_base_url"] = judge_base_url
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def prepare_eval_folder(out: Path, text: str, overwrite: bool) -> None:
    """An evaluation's folder holds one evaluation: the same one resumes, another needs ``overwrite``."""
    saved = out / SPEC_FILE
    check_output_dir(out, "out")
    check_not_nested(out, "out")  # before --overwrite may remove it: never a folder of another run
    if not out.exists():
        return
    if saved.is_file() and saved.read_text(encoding="utf-8") == text:
        return
    if not any(out.iterdir()):
        return
    if not overwrite:
        what = "a run with different settings" if saved.is_file() else "other files"
        raise InputError(f"holds {what}; pass --overwrite to start again, or choose another --out", out, field="out")
    if not (saved.is_file() or (out / DB_FILE).is_file()):
        raise InputError("is not a run folder; --overwrite only replaces run folders", out, field="out")
    shutil.rmtree(out)


def run_evaluation(kind: str, fields: dict, out: str | Path, model: str = "embedded", adapter: str | None = None,
                   judge: str = "offline", seed: int = 0, base_url: str | None = None,
                   judge_base_url: str | None = None, overwrite: bool = False, progress: bool = True,
                   backend: str = "auto", timeout: float | None = None, offline: bool = False) -> StudyRun:
    """``characterlab eval <kind>``; ``timeout`` (seconds an attempt at an endpoint may take) and
    ``offline`` (download no model) are not written into the study, so other values resume the same
    run folder."""
    get_evaluation(kind)  # an unknown kind fails before anything is written
    text = evaluation_study_text(kind, fields, model, adapter, judge, seed, base_url, judge_base_url)
    return run_study_text(text, f"characterlab eval {kind}", out, overwrite, progress, backend, timeout, offline)


def run_suite(out: str | Path, model: str = "embedded", adapter: str | None = None, judge: str = "offline",
              seed: int = 0, base_url: str | None = None, judge_base_url: str | None = None,
              overwrite: bool = False, progress: bool = True, backend: str = "auto",
              timeout: float | None = None, offline: bool = False) -> StudyRun:
    """``characterlab eval nem``: the paper's six misalignment evaluations and their mean."""
    from characterlab.study.headline import NEM_SUITE

    text = suite_study_text("eval-nem", "characterlab eval nem", [dict(e) for e in NEM_SUITE], [e["name"] for e in NEM_SUITE],
                            model, adapter, judge, seed, base_url, judge_base_url)
    return run_study_text(text, "characterlab eval nem", out, overwrite, progress, backend, timeout, offline)


def run_study_text(text: str, source: str, out: str | Path, overwrite: bool, progress: bool,
                   backend: str = "auto", timeout: float | None = None, offline: bool = False) -> StudyRun:
    """Run a study this module wrote; its scored rows go to ``samples.jsonl`` (one evaluation of one
    model), else ``samples-<condition>-<evaluation>.jsonl`` (each part only where there are several)."""
    spec = parse_study(text, source)
    out = Path(out)
    try:
        plan = build_plan(spec, Path.cwd())  # the files and references it names, before the folder is touched
    except InputErrors as e:  # the study is ours, not the user's: report the problems of their files and flags
        raise InputErrors([getattr(p, "inner", p) for p in e.problems]) from None
    check_models(plan, offline)  # before --overwrite removes the old run
    prepare_eval_folder(out, text, overwrite)
    run = run_spec(spec, text, out, Path.cwd(), progress=progress, backend=backend, timeout=timeout, offline=offline)
    if run.results is not None:
        store = RunStore(out)
        try:
            conditions = {c.condition for c in run.plan.cells}
            evaluations = {c.evaluation for c in run.plan.cells}
            for cell in run.plan.cells:
                parts = [cell.condition] * (len(conditions) > 1) + [cell.evaluation] * (len(evaluations) > 1)
                name = "-".join(["samples", *parts]) + ".jsonl" if parts else SAMPLES
                atomic_write_text(out / name, jsonl_text(store.rows(run.plan.units[cell.metric].deps[0])))
        finally:
            store.close()
    return run


def single_evaluation(results: dict) -> tuple[str, dict]:
    """The (kind, evaluation entry) of a one-evaluation run's results.json."""
    [cond] = results["conditions"].values() if len(results["conditions"]) == 1 else [None]
    if cond is None or len(cond["evaluations"]) != 1:
        raise InputError("not the results of one evaluation (characterlab eval)", field="compare")
    [entry] = cond["evaluations"].values()
    return entry["kind"], entry


def load_run_results(folder: str | Path) -> dict:
    path = Path(folder) / RESULTS_FILE
    if not path.is_file():
        raise InputError("no results.json here; run the evaluation first", folder, field="compare")
    return load_json(read_text(path, field="compare"), path)


def compare_runs(a: dict, b: dict) -> dict:
    """A minus B, two runs of the same evaluation: the evaluation's own comparison."""
    kind_a, ea = single_evaluation(a)
    kind_b, eb = single_evaluation(b)
    if kind_a != kind_b:
        raise InputError(f"cannot compare a {kind_a} evaluation with a {kind_b} one", field="compare")
    ev = get_evaluation(kind_a)
    ja, jb = a["metadata"].get("judge_ids"), b["metadata"].get("judge_ids")
    return {
        "a": {"model": a["metadata"]["model"], "description": a.get("description"), ev.kind: ev.seed_value(
            next(iter(ea["per_seed"].values()))), "n": ea["pooled"].get("rate", {}).get("n")},
        "b": {"model": b["metadata"]["model"], "description": b.get("description"), ev.kind: ev.seed_value(
            next(iter(eb["per_seed"].values()))), "n": eb["pooled"].get("rate", {}).get("n")},
        "judges_match": ja == jb,
        "judge_agreement": a["metadata"].get("judge_agreement") if ja == jb else None,
        **ev.compare(ea, eb),
    }
