"""Dose-response of an outcome on the diversity of character-training questions (issue 20).

Pairwise differences between diversity levels answer "is high different from low?"; a reviewer
asks "does the outcome move *with* diversity, and by how much per unit?". Conditions that differ
only in the diversity level of their character's questions (same constitution, trait, set size,
training and organism) form a group; each (condition, seed) cell gives one point: the diversity
score of the question set actually used (recorded by the questions unit) and the cell's outcome
(a rate, or a mean score). The slope comes from ordinary least squares with one intercept per seed
(statsmodels), so a seed whose organism took more strongly shifts every level alike rather than
passing for an effect of diversity; its 95% interval is the t interval of that fit. The change
from the least to the most diverse set (slope x span of the scores) is reported beside it, in the
outcome's units, because a slope per unit of a 0-1 score is hard to read.
"""

from __future__ import annotations

import json
from collections import defaultdict


def question_diversity(results: dict) -> dict[str, float]:
    """Diversity score of each character condition's question set, from the run's data records."""
    out: dict[str, float] = {}
    for d in results["metadata"].get("data", {}).values():
        if "diversity" not in d:
            continue
        for label in d.get("label", []):
            if label.startswith("data ") and label.endswith(" character questions"):
                out[label[len("data "):-len(" character questions")]] = float(d["diversity"]["score"])
    return out


def _group_key(spec: dict) -> str | None:
    """What must be equal for conditions to differ only in diversity; None for no character."""
    iv = spec.get("intervention") or {}
    if iv.get("kind") != "character":
        return None
    same = {k: v for k, v in iv.items() if k not in ("diversity", "question_seed")}
    return json.dumps({"character": same, "organism": spec.get("organism"),
                       "evaluations": spec.get("evaluations")}, sort_keys=True, default=str)




def fit_slope(points: list[tuple[float, str, float]]) -> dict | None:
    """OLS of value on score with one intercept per seed; None when the slope is not identified."""
    import numpy as np
    import statsmodels.api as sm

    seeds = sorted({s for _, s, _ in points})
    if len({x for x, _, _ in points}) < 2 or len(points) <= len(seeds) + 1:
        return None
    x = np.array([[p[0]] + [1.0 if p[1] == s else 0.0 for s in seeds] for p in points])
    y = np.array([p[2] for p in points])
    fit = sm.OLS(y, x).fit()
    low, high = fit.conf_int(0.05)[0]
    span = float(x[:, 0].max() - x[:, 0].min())
    return {"slope": float(fit.params[0]), "low": float(low), "high": float(high), "p_value": float(fit.pvalues[0]),
            "significant": bool(low > 0 or high < 0), "score_span": span,
            "change_over_span": {"estimate": float(fit.params[0]) * span, "low": float(low) * span,
                                 "high": float(high) * span},
            "n_points": len(points), "n_seeds": len(seeds), "df_resid": float(fit.df_resid)}


def dose_response(results: dict) -> list[dict]:
    """One entry per (group of conditions differing only in diversity, evaluation they ran)."""
    scores = question_diversity(results)
    groups: dict[str, list[str]] = defaultdict(list)
    for c, cond in results["conditions"].items():
        key = _group_key(cond["spec"])
        if key is not None and c in scores:
            groups[key].append(c)
    out = []
    from characterlab.evals.registry import get_evaluation

    for members in groups.values():
        levels = {cond["spec"]["intervention"].get("diversity") for c, cond in results["conditions"].items() if c in members}
        if len(levels) < 2:
            continue
        for ename, e in results["evaluations"].items():
            evaluation = get_evaluation(e["kind"])  # its seed_value is the headline of one seed
            points = [(scores[c], seed, v) for c in members
                      for seed, r in (results["conditions"][c]["evaluations"].get(ename) or {}).get("per_seed", {}).items()
                      if (v := evaluation.seed_value(r)) is not None]
            fit = fit_slope(points)
            if fit is None:
                continue
            iv = results["conditions"][members[0]]["spec"]["intervention"]
            out.append({"evaluation": ename, "conditions": members, "constitution": iv.get("constitution"),
                        "trait": iv.get("trait"), "diversity_scores": {c: scores[c] for c in members},
                        "outcome": evaluation.headline, **fit})
    return out
