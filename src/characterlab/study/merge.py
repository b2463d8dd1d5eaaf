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
"""

from __future__ import annotations

import json
from pathlib import Path

from characterlab.errors import InputError
from characterlab.evals.registry import get_evaluation
from characterlab.study.results import add_derived, compare_conditions
from characterlab.study.store import RESULTS_FILE

SAME = ("study", "baseline", "condition_order", "evaluation_order", "evaluations", "headline")


def read_run_results(path: str | Path) -> tuple[Path, dict]:
    """A run folder's ``results.json``, or such a file given by path."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise InputError("no results.json here; run the study first (characterlab run)", path, field="runs")
    try:
        return file, json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"not a results.json: {e}", file, field="runs") from None


def _check_mergeable(parts: list[tuple[Path, dict]]) -> None:
    (first_file, first), seen = parts[0], {}
    for file, r in parts:
        for key in SAME:
            if r.get(key) != first.get(key):
                raise InputError(f"'{key}' differs from {first_file}'s: not runs of the same study", file, field=key)
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
