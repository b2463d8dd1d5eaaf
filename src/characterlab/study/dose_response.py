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
from pathlib import Path


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
    same = {k: v for k, v in iv.items() if k not in ("diversity", "paraphrase_seeds", "question_seed")}
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
            "intercepts": {s: float(b) for s, b in zip(seeds, fit.params[1:])},
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
        members.sort(key=scores.get)  # least to most diverse, however the conditions were stored
        if len({scores[c] for c in members}) < 2:  # one set, or sets scored alike: no axis to fit
            continue
        for ename, e in results["evaluations"].items():
            evaluation = get_evaluation(e["kind"])  # its seed_value is the headline of one seed
            cells = [(c, seed, v) for c in members
                     for seed, r in (results["conditions"][c]["evaluations"].get(ename) or {}).get("per_seed", {}).items()
                     if (v := evaluation.seed_value(r)) is not None]
            fit = fit_slope([(scores[c], seed, v) for c, seed, v in cells])
            if fit is None:
                continue
            iv = results["conditions"][members[0]]["spec"]["intervention"]
            out.append({"evaluation": ename, "conditions": members, "constitution": iv.get("constitution"),
                        "trait": iv.get("trait"), "diversity_scores": {c: scores[c] for c in members},
                        "outcome": evaluation.headline, **fit,
                        "points": [{"condition": c, "seed": seed, "score": scores[c], "value": v} for c, seed, v in cells]})
    return out


def _controls(results: dict, members: list[str]) -> list[str]:
    """The conditions the group is compared with, following each member's ``control`` chain
    (candour-high -> content-free -> organism): what a protective effect would be measured against."""
    out: list[str] = []
    for c in members:
        seen = {c}
        while (c := results["conditions"][c]["spec"].get("control")) in results["conditions"] and c not in seen:
            seen.add(c)
            if c not in members and c not in out:
                out.append(c)
    return out


def _pooled_mark(ax, x: float, value: tuple, **style) -> None:
    """One pooled (value, low, high) at ``x``, with its interval where it has one."""
    m, lo, hi = value
    ax.errorbar([x], [m], yerr=[[m - lo], [hi - m]] if lo is not None else None, capsize=3, ms=5, **style)


def crowded_by_next(x: float, xs, gap: float) -> bool:
    """Whether another level sits less than ``gap`` to the right of ``x``: its name is then drawn on
    the left of its mark, so two close levels' names (0.83 and 0.86 in the diversity study) do not
    overlap."""
    return any(0 < other - x < gap for other in xs)


def plot_dose_response(results: dict, path: Path) -> bool:
    """One panel per (diversity group, evaluation): each seed's outcome at the diversity score of
    the questions actually used, the fitted line of each seed (common slope, the seed's intercept),
    the levels pooled over seeds with their 95% intervals, and the group's controls (the
    content-free constitution at its own diversity score, the organism alone as a band) so that
    "does diversity protect?" and "does the trait protect at matched diversity?" read off one
    figure. False when there is no fitted entry with its points (a results.json written before
    the points were kept: merge or re-run to refit)."""
    from characterlab.evals.plots import figure_module, mean_value, rate_value, save_figure

    entries = [d for d in results.get("dose_response") or [] if d.get("points") and d.get("intercepts")]
    if not entries:
        return False
    plt = figure_module()
    scores = question_diversity(results)
    cols = min(2, len(entries))
    rows = -(-len(entries) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(entries):]:
        ax.set_visible(False)
    for ax, d in zip(axes.flat, entries):
        rate = d["outcome"] == "rate"
        scale = 100.0 if rate else 1.0
        value_of = rate_value if rate else mean_value
        seeds = sorted(d["intercepts"])
        xs = sorted(set(d["diversity_scores"].values()))
        for k, seed in enumerate(seeds):
            pts = [p for p in d["points"] if p["seed"] == seed]
            colour = f"C{k % 10}"
            ax.plot([p["score"] for p in pts], [scale * p["value"] for p in pts], "o", color=colour, alpha=0.6, ms=4,
                    label=f"seed {seed}")
            ax.plot(xs, [scale * (d["intercepts"][seed] + d["slope"] * x) for x in xs], "-", color=colour, alpha=0.5, lw=1)
        nudge = 0.02 * (max(xs) - min(xs))  # a control drawn at a member's score sits just beside it
        for i, c in enumerate(d["conditions"]):
            v = value_of(results["conditions"][c]["evaluations"][d["evaluation"]]["pooled"])
            if v is not None:
                x = d["diversity_scores"][c]
                _pooled_mark(ax, x, v, fmt="s", color="black", label="pooled over seeds" if i == 0 else None)
                crowded = crowded_by_next(x, d["diversity_scores"].values(), 10 * nudge)
                ax.annotate(c, (x, v[0]), fontsize=7, xytext=(-5 if crowded else 5, 6 if i % 2 else -10),
                            textcoords="offset points", ha="right" if crowded else "left")
        for c in _controls(results, d["conditions"]):
            ev = results["conditions"][c]["evaluations"].get(d["evaluation"])
            v = None if ev is None else value_of(ev["pooled"])
            if v is None:
                continue
            m, lo, hi = v
            if c in scores:  # a character control: at the diversity of its own questions
                _pooled_mark(ax, scores[c] + nudge, v, fmt="D", mfc="white", color="grey", label=c)
            else:  # no character: a band across the axis
                ax.axhline(m, color="grey", ls=":", lw=1, label=c)
                if lo is not None:
                    ax.axhspan(lo, hi, color="grey", alpha=0.12)
        span = d["change_over_span"]
        ax.set_title(f"{d['evaluation']} vs the diversity of the {d.get('trait')} questions\n"
                     f"least to most diverse: {scale * span['estimate']:+.1f} [{scale * span['low']:+.1f}, "
                     f"{scale * span['high']:+.1f}], p = {d['p_value']:.2f}", fontsize=8)
        ax.set_xlabel("diversity score of the questions used")
        ax.set_ylabel(f"{d['evaluation']} rate (%)" if rate else f"{d['evaluation']} score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)
    return True
