"""One study's runs at different seeds, merged into one result (``characterlab merge``).

A study with many seeds need not run in one place: each machine (a job of a cluster's array, a
session of a few hours) runs ``characterlab run STUDY --seeds N --out RUN-N``, and the runs'
``results.json`` are merged here as if one run had done every seed. Nothing is re-judged or
re-trained: a seed's figures are the ones its run wrote. What pools over seeds is recomputed -
each evaluation's pooled value (its own :meth:`~characterlab.evals.base.Evaluation.pool`), the
differences from the baseline and from each matched control, and the analyses derived from them
(dose-response across seeds, the headline score, RL curves) - so a merged result reads exactly
like one run's.

Runs merge only if they ran the same study (the same conditions, evaluations and settings, up to
the seeds) and no seed is in two of them.

A ``results.json`` may have been edited by hand, so what the merge reads is checked first (its
shape, seeds that are integers, unit keys, names that are file-safe, counts that are numbers, and
per-seed figures its evaluation can pool), and a problem is one line at its file, line and field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from characterlab.data.files import load_json, read_text
from characterlab.errors import InputError
from characterlab.evals.base import check_name
from characterlab.evals.registry import get_evaluation
from characterlab.study.results import add_derived, compare_conditions
from characterlab.study.store import RESULTS_FILE

SAME = ("study", "baseline", "condition_order", "evaluation_order", "evaluations", "headline")
# what a per-seed metric reads as a count: its k, n and n_* fields
COUNT_FIELD = re.compile(r"^(k|n|n_\w+)$")
# the exceptions an evaluation's own code raises on figures of the wrong shape or type
BAD_FIGURES = (KeyError, TypeError, ValueError, ZeroDivisionError, AttributeError, IndexError)


def _seed_key(v: str) -> str:
    if not re.fullmatch(r"-?[0-9]{1,18}", v):
        raise ValueError(f"a seed is an integer, not {v!r}")
    return v


def _unit_key(v: str) -> str:
    if not re.fullmatch(r"[a-z]+-[0-9a-f]{16}", v):
        raise ValueError(f"not a unit key: {v!r}")
    return v


SeedKey = Annotated[str, AfterValidator(_seed_key)]
UnitKey = Annotated[str, AfterValidator(_unit_key)]
Name = Annotated[str, AfterValidator(check_name)]


class _Checked(BaseModel):
    """Only what the merge reads, with exact types ("3" is not a count); other keys pass."""

    model_config = ConfigDict(strict=True, extra="allow")


class _EvaluationEntry(_Checked):
    kind: str
    per_seed: dict[SeedKey, dict]
    units: dict[SeedKey, UnitKey]


class _Condition(_Checked):
    spec: dict
    evaluations: dict[Name, _EvaluationEntry]
    training: dict[SeedKey, list]


class _Metadata(_Checked):
    model: str
    judge: str
    seeds: list[int] = Field(min_length=1)
    judge_ids: list[str] = Field(default_factory=list)
    data: dict | None = None
    n_units: int = Field(default=0, ge=0)
    compute_seconds: float | None = None
    wall_seconds_all_runs: float | None = None
    peak_rss_mb_by_unit_kind: dict[str, float] = Field(default_factory=dict)
    runs: list = Field(default_factory=list)


class _RunResults(_Checked):
    study: Name
    baseline: str
    condition_order: list[str]
    evaluation_order: list[str]
    evaluations: dict[Name, dict]
    headline: list[str] = Field(default_factory=list)
    conditions: dict[Name, _Condition]
    metadata: _Metadata
    examples: dict[str, list[dict]] = Field(default_factory=dict)


def _problem(file: Path, loc: tuple, message: str, bad_key: bool = False) -> InputError:
    """An error at key path ``loc`` of a results file, with its line where it can be found. A
    ``bad_key`` (the last part of ``loc``) is reported as a problem of the mapping holding it."""
    from characterlab.data.yaml_loader import dotted, line_of, yaml_lines

    try:
        line = line_of(yaml_lines(file.read_text(encoding="utf-8")), loc) if loc else None
    except Exception:  # noqa: BLE001 - the line is a courtesy; the field path names the place
        line = None
    return InputError(message, file, line, dotted(loc[:-1] if bad_key else loc) or None)


def _is_count(value: Any) -> bool:
    if value is None:
        return True  # a count an evaluation leaves unset
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _count_problem(figures: Any, loc: tuple) -> tuple[tuple, str] | None:
    """The first k / n / n_* field of per-seed figures that is not a number (or null)."""
    if isinstance(figures, dict):
        for key, value in figures.items():
            if COUNT_FIELD.match(str(key)) and not _is_count(value):
                return loc + (key,), f"a count is a number of 0 or more, not {value!r}"
            found = _count_problem(value, loc + (key,))
            if found:
                return found
    elif isinstance(figures, list):
        for i, value in enumerate(figures):
            found = _count_problem(value, loc + (i,))
            if found:
                return found
    return None


def check_run_results(file: Path, results: Any, field: str = "runs") -> None:
    """What the merge (and the report) reads of one run's results: its shape and types, then each
    seed's figures pooled alone by its own evaluation (a figure it cannot read fails here, at its
    seed). ``field`` names the option that gave the file, for a file that is not an object."""
    if not isinstance(results, dict):
        raise InputError("not a results.json (a JSON object)", file, field=field)
    try:
        _RunResults.model_validate(results)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(x for x in err["loc"] if x != "[key]")
        raise _problem(file, loc, err["msg"].removeprefix("Value error, "), bad_key="[key]" in err["loc"]) from None
    for c, cond in results["conditions"].items():
        for name, entry in cond["evaluations"].items():
            try:
                ev = get_evaluation(entry["kind"])
            except KeyError:
                raise _problem(file, ("conditions", c, "evaluations", name, "kind"),
                               f"no evaluation of kind {entry['kind']!r}") from None
            for seed, figures in entry["per_seed"].items():
                loc = ("conditions", c, "evaluations", name, "per_seed", seed)
                if found := _count_problem(figures, loc):
                    raise _problem(file, *found)
                try:
                    ev.pool({int(seed): figures})
                except BAD_FIGURES as e:
                    raise _problem(file, loc, f"figures its {entry['kind']} evaluation cannot pool "
                                              f"({type(e).__name__}: {e})") from None


def read_run_results(path: str | Path, field: str = "runs") -> tuple[Path, dict]:
    """A run folder's ``results.json``, or such a file given by path, checked for what a merge (or
    ``characterlab report``) reads; ``field`` names the option or argument that gave ``path``."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise InputError("no results.json here; run the study first (characterlab run)", path, field=field)
    results = load_json(read_text(file, field=field), file, what="not a results.json", field=field)
    check_run_results(file, results, field)
    return file, results


def _check_mergeable(parts: list[tuple[Path, dict]]) -> None:
    (first_file, first), seen = parts[0], {}
    for file, r in parts:
        for key in SAME:
            if r.get(key) != first.get(key):
                raise InputError(f"'{key}' differs from {first_file}'s: not runs of the same study", file, field=key)
        if set(r["conditions"]) != set(first["conditions"]):
            raise InputError(f"its conditions differ from {first_file}'s", file, field="conditions")
        for c, cond in r["conditions"].items():
            if cond["spec"] != first["conditions"][c]["spec"]:
                raise InputError(f"condition '{c}' differs from {first_file}'s", file, field=f"conditions.{c}")
        if r["metadata"]["model"] != first["metadata"]["model"] or r["metadata"]["judge"] != first["metadata"]["judge"]:
            raise InputError(f"model or judge differs from {first_file}'s", file, field="metadata")
        for seed in r["metadata"]["seeds"]:
            if seed in seen:
                raise InputError(f"seed {seed} is also in {seen[seed]}: each seed must come from one run", file,
                                 field="seeds")
            seen[seed] = file


def _merge_examples(parts: list[dict]) -> dict[str, list[dict]]:
    """Each run kept its own rows worth reading; the merge keeps as many, the most misaligned first
    where they carry an aligned score (the EM examples), else in run order."""
    out: dict[str, list[dict]] = {}
    for key in dict.fromkeys(k for r in parts for k in r.get("examples", {})):
        lists = [r.get("examples", {}).get(key) or [] for r in parts]
        rows = [x for rows in lists for x in rows]
        if rows and all(isinstance(x.get("aligned"), (int, float)) for x in rows):
            rows.sort(key=lambda x: x["aligned"])
        out[key] = rows[:max(len(x) for x in lists)]
    return out


def merge_results(paths: list[str | Path]) -> dict:
    """``results.json`` of one study over the seeds of all ``paths`` (run folders or results files)."""
    if len(paths) < 2:
        raise InputError("merge needs two or more runs", field="runs")
    parts = [read_run_results(p) for p in paths]
    _check_mergeable(parts)
    try:
        return _merge(parts)
    except BAD_FIGURES as e:  # each run's figures pooled alone; together they still disagree
        raise InputError(f"these runs' figures cannot be pooled together ({type(e).__name__}: {e})",
                         field="runs") from None


def _merge(parts: list[tuple[Path, dict]]) -> dict:
    results = [r for _, r in parts]
    first = results[0]
    conditions: dict[str, dict] = {}
    for c, cond in first["conditions"].items():
        evals = {}
        for e, ev in cond["evaluations"].items():
            per_seed = {s: m for r in results for s, m in r["conditions"][c]["evaluations"][e]["per_seed"].items()}
            units = {s: u for r in results for s, u in r["conditions"][c]["evaluations"][e]["units"].items()}
            pooled = get_evaluation(ev["kind"]).pool({int(s): m for s, m in per_seed.items()})
            evals[e] = {"kind": ev["kind"], "pooled": pooled, "per_seed": dict(sorted(per_seed.items())),
                        "units": dict(sorted(units.items()))}
        training = {s: chain for r in results for s, chain in r["conditions"][c]["training"].items()}
        conditions[c] = {"spec": cond["spec"], "evaluations": evals, "training": dict(sorted(training.items()))}
    controls = {c: cond["spec"]["control"] for c, cond in conditions.items() if cond["spec"].get("control")}
    compare_conditions(conditions, first["baseline"], controls)
    metas = [r["metadata"] for r in results]
    judges = [m.get("judge_agreement") for m in metas if m.get("judge_agreement")]
    merged = {
        **{k: first.get(k) for k in (*SAME, "description")},
        "conditions": conditions,
        "metadata": {
            "model": first["metadata"]["model"],
            "judge": first["metadata"]["judge"],
            "judge_ids": sorted({j for m in metas for j in m.get("judge_ids", [])}),
            "judge_agreement": judges[0] if judges else None,
            "seeds": sorted(s for m in metas for s in m["seeds"]),
            "code_version": sorted({m.get("code_version") for m in metas if m.get("code_version")}),
            "data": {k: v for m in metas for k, v in (m.get("data") or {}).items()},
            "n_units": sum(m.get("n_units", 0) for m in metas),  # units shared by two runs count twice
            "compute_seconds": sum(m.get("compute_seconds") or 0 for m in metas),
            "wall_seconds_all_runs": sum(m.get("wall_seconds_all_runs") or 0 for m in metas),
            "host": first["metadata"].get("host"),
            "peak_rss_mb_by_unit_kind": {k: max(m.get("peak_rss_mb_by_unit_kind", {}).get(k, 0) for m in metas)
                                         for k in dict.fromkeys(k for m in metas
                                                                for k in m.get("peak_rss_mb_by_unit_kind", {}))},
            "runs": [run for m in metas for run in m.get("runs", [])],
            "merged_from": [str(f) for f, _ in parts],
        },
        "examples": _merge_examples(results),
    }
    return add_derived(merged)
