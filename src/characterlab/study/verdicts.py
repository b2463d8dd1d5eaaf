"""Check a judge's verdicts, not only its rates: a second judge and a reader on a balanced sample.

An EM rate is only as good as the flags it counts. The offline judge is validated on 7B-32B
models' answers; on another model its flags may be wrong in ways its rates hide (issue 18: on
SmolLM2-135M most flags were word salad). So, for one condition and evaluation of a finished run:

1. :func:`sample_verdicts` draws ``n`` answers the study's judge flagged misaligned and ``n`` it
   scored and did not flag (seeded), with its scores;
2. :func:`second_opinion` scores them again with another judge (a logprob judge on a local model
   or an OpenAI-compatible endpoint) and records its verdict beside the first;
3. a person reads each answer and writes ``reading``: ``misaligned``, ``aligned`` or
   ``incoherent`` (the file is JSONL; any editor will do);
4. :func:`agreement` gives, for each pair of verdicts, the share that agree and Cohen's kappa,
   and the precision and recall of the first judge's flag against the reading.

Kappa and not raw agreement: with half the sample flagged by construction, two judges that
flag at random agree half the time.
"""

from __future__ import annotations

import random
from pathlib import Path

from characterlab.errors import InputError

READINGS = ("misaligned", "aligned", "incoherent")


def judged_rows(folder: Path, condition: str, evaluation: str) -> list[dict]:
    """The judged rows of one condition and evaluation, every seed."""
    from characterlab.data.files import load_json, read_text
    from characterlab.study.results import results_path
    from characterlab.study.store import RunStore

    path = results_path(folder)
    if not path.is_file():
        raise InputError("no results.json: not a finished run folder", folder, field="run")
    results = load_json(read_text(path, field="run"), path)
    if condition not in results["conditions"]:
        raise InputError(f"no condition {condition!r} (has: {', '.join(results['conditions'])})", path, field="condition")
    evals = results["conditions"][condition]["evaluations"]
    if evaluation not in evals:
        raise InputError(f"no evaluation {evaluation!r} (has: {', '.join(evals)})", path, field="evaluation")
    store = RunStore(folder)
    try:
        rows = []
        for seed, metric_key in evals[evaluation]["units"].items():
            judge_key = store.deps(metric_key)[0]
            rows += [{**r, "condition": condition, "evaluation": evaluation, "seed": int(seed)}
                     for r in store.rows(judge_key)]
        return rows
    finally:
        store.close()


def sample_verdicts(folder: str | Path, condition: str, evaluation: str, n: int = 40, seed: int = 0) -> list[dict]:
    """Up to ``n`` flagged and ``n`` unflagged scored answers, each with the first judge's verdict."""
    rows = judged_rows(Path(folder), condition, evaluation)
    if rows and "misaligned" not in rows[0]:
        raise InputError(f"evaluation {evaluation!r} has no misaligned verdicts (not judged for EM)", folder,
                         field="evaluation")
    scored = [r for r in rows if r.get("special") is None and r.get("aligned") is not None
              and r.get("coherent") is not None and not r.get("error")]
    rng = random.Random(seed)
    out = []
    for flagged in (True, False):
        pool = [r for r in scored if bool(r["misaligned"]) == flagged]
        for r in rng.sample(pool, min(n, len(pool))):
            out.append({"condition": condition, "evaluation": evaluation, "seed": r["seed"],
                        "question": r["question"], "answer": r["answer"],
                        "first": {k: r[k] for k in ("aligned", "coherent", "misaligned")},
                        "stratum_size": len(pool), "reading": None})
    return out


def second_opinion(rows: list[dict], judge: str, base_url: str | None = None, timeout: float | None = None) -> str:
    """Score ``rows`` with ``judge`` and put its verdict in each row's ``second``; returns its id.
    ``timeout``: seconds an attempt at an endpoint judge may take (None: its default)."""
    from characterlab.judge.base import JudgeInput
    from characterlab.judge.factory import JudgeFactory, score_in_batches

    scorer = JudgeFactory(judge, base_url=base_url, timeout=timeout).for_prompts(None)
    for row, j in zip(rows, score_in_batches(scorer, [JudgeInput(r["question"], r["answer"]) for r in rows])):
        row["second"] = {"judge": scorer.judge_id, **j.to_dict()}
    return scorer.judge_id


def _kappa(a: list[bool], b: list[bool]) -> dict:
    from sklearn.metrics import cohen_kappa_score

    if not a:
        return {"n": 0, "agree": None, "kappa": None}
    same = sum(x == y for x, y in zip(a, b)) / len(a)
    kappa = None if len(set(a)) < 2 and len(set(b)) < 2 else float(cohen_kappa_score(a, b))
    return {"n": len(a), "agree": same, "kappa": kappa}


def _population_estimates(read: list[dict], truth: list[bool]) -> dict:
    """Recall and the misaligned rate by reading for the whole condition, not the balanced sample.

    Flagged answers are oversampled, so each read answer stands for ``stratum_size / sampled`` of
    its stratum (flagged or not). The rate by reading is what the EM rate would be had a reader
    judged every answer, with the sampling error of two small samples: read it as a rough check.
    """
    sampled: dict[bool, int] = {}
    for r in read:
        sampled[bool(r["first"]["misaligned"])] = sampled.get(bool(r["first"]["misaligned"]), 0) + 1
    w = [r["stratum_size"] / sampled[bool(r["first"]["misaligned"])] for r in read]
    total = sum(w)
    misaligned = sum(wi for wi, t in zip(w, truth) if t)
    caught = sum(wi for wi, t, r in zip(w, truth, read) if t and r["first"]["misaligned"])
    return {"population": round(total), "rate_by_reading": misaligned / total if total else None,
            "first_recall_population": caught / misaligned if misaligned else None}


def _second_scored(row: dict) -> bool:
    """Whether the second judge gave both scores (a weak logprob judge often puts no mass on numbers)."""
    s = row.get("second")
    return bool(s) and not s.get("error") and s.get("special") is None and s.get("aligned") is not None \
        and s.get("coherent") is not None


def agreement(rows: list[dict], source: str | Path = "<rows>") -> dict:
    """Pairwise agreement on the misaligned verdict between the first judge, the second and the reading.

    A reading of ``incoherent`` counts as not misaligned, as the EM rule does. Rows without a
    reading are left out of the comparisons with it; an unknown reading is an error at its line.
    """
    for i, r in enumerate(rows, 1):
        if r.get("reading") is not None and r["reading"] not in READINGS:
            raise InputError(f"must be one of {', '.join(READINGS)} (or null)", source, i, "reading")
    first = [bool(r["first"]["misaligned"]) for r in rows]
    out: dict = {"n": len(rows), "first_flagged": sum(first)}
    if any("second" in r for r in rows):
        both = [(bool(r["first"]["misaligned"]), bool(r["second"]["misaligned"])) for r in rows if _second_scored(r)]
        out["second_unscored"] = sum("second" in r and not _second_scored(r) for r in rows)
        out["first_vs_second"] = _kappa([a for a, _ in both], [b for _, b in both])
    read = [r for r in rows if r.get("reading") is not None]
    if read:
        truth = [r["reading"] == "misaligned" for r in read]
        flags = [bool(r["first"]["misaligned"]) for r in read]
        out["readings"] = {k: sum(r["reading"] == k for r in read) for k in READINGS}
        out["first_vs_reading"] = _kappa(flags, truth)
        tp = sum(f and t for f, t in zip(flags, truth))
        out["first_precision"] = tp / sum(flags) if any(flags) else None
        out["first_recall"] = tp / sum(truth) if any(truth) else None
        flagged = [r for r in read if r["first"]["misaligned"]]
        out["flagged_read_incoherent"] = (sum(r["reading"] == "incoherent" for r in flagged) / len(flagged)
                                          if flagged else None)
        if all(r.get("stratum_size") for r in read):
            out.update(_population_estimates(read, truth))
        if any("second" in r for r in read):
            pairs = [(r["second"]["misaligned"], t) for r, t in zip(read, truth) if _second_scored(r)]
            out["second_vs_reading"] = _kappa([bool(a) for a, _ in pairs], [b for _, b in pairs])
    return out
