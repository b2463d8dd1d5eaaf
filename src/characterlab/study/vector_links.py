"""Persona vectors in a study's results: does steering move the behaviour with the coefficient,
does the projection shift predict the behaviour, and how did the projection move along training?

Steering dose-response: conditions that steer with the same vector at the same layer and differ
only in ``coef`` (the baseline counts as coef 0) give one point per coefficient for every
evaluation that reports judged scores (EM: mean aligned and mean coherent with their 95%
intervals, and the rate); the Spearman correlation of coefficient and mean aligned score says
whether the trait moves monotonically (Chen et al.'s acceptance: |rho| >= 0.9), while coherence
shows what the steering costs.

Chen et al. (2025) report that the shift of a fine-tuned model along a trait's vector correlates
with how much the trait shows in its answers. With a ``projection`` evaluation and a rate
evaluation (EM, say) in one study, each condition gives one point (pooled projection, pooled
rate); their Spearman rank correlation across conditions comes with a Fisher-z 95% interval
(Bonett & Wright's standard error for Spearman, ``sqrt((1 + r^2 / 2) / (n - 3))``), which needs at
least 5 conditions. Organisms trained with ``monitor:`` also carry the projection read every K
steps; :func:`plot_monitor` draws those curves.
"""

from __future__ import annotations

import math
from pathlib import Path

from characterlab.evals.registry import get_evaluation

MIN_CONDITIONS = 5


def spearman_interval(r: float, n: int) -> tuple[float, float]:
    if n <= 3 or abs(r) >= 1:
        return (r, r) if abs(r) >= 1 else (-1.0, 1.0)
    se = math.sqrt((1 + r * r / 2) / (n - 3))
    z = math.atanh(r)
    return math.tanh(z - 1.96 * se), math.tanh(z + 1.96 * se)


def projection_vs_behaviour(results: dict) -> list[dict]:
    """For every (projection evaluation, rate evaluation) pair: Spearman across conditions."""
    from scipy.stats import spearmanr

    evals = results["evaluations"]
    projections = [n for n, e in evals.items() if e["kind"] == "projection"]
    behaviours = [n for n, e in evals.items() if get_evaluation(e["kind"]).headline == "rate"]
    out = []
    for p in projections:
        for b in behaviours:
            points = []
            for c, cond in results["conditions"].items():
                ep, eb = cond["evaluations"].get(p), cond["evaluations"].get(b)
                if ep and eb and ep["pooled"].get("mean") is not None and eb["pooled"]["rate"]["estimate"] is not None:
                    points.append((c, ep["pooled"]["mean"], eb["pooled"]["rate"]["estimate"]))
            if len(points) < MIN_CONDITIONS:
                continue
            xs, ys = [x for _, x, _ in points], [y for _, _, y in points]
            if len(set(xs)) < 2 or len(set(ys)) < 2:  # a constant side: no ranking to compare
                continue
            r = float(spearmanr(xs, ys).statistic)
            low, high = spearman_interval(r, len(points))
            out.append({"projection": p, "behaviour": b, "spearman": r, "low": low, "high": high,
                        "n_conditions": len(points), "significant": not (low <= 0 <= high),
                        "points": {c: {"projection": x, "rate": y} for c, x, y in points}})
    return out


def steering_dose_response(results: dict) -> list[dict]:
    """Per (vector, layer) steered with >= 3 coefficients and per evaluation with judged scores."""
    from scipy.stats import spearmanr

    def rho(xs: list[float], ys: list[float]) -> float | None:  # None for a constant outcome: nothing to rank
        return None if len(set(ys)) < 2 else float(spearmanr(xs, ys).statistic)

    groups: dict[tuple[str, int], dict[float, str]] = {}
    for c, cond in results["conditions"].items():
        steer = cond["spec"].get("steer")
        if steer:
            groups.setdefault((steer["vector"], steer["layer"]), {})[float(steer["coef"])] = c
    baseline = results.get("baseline")
    out = []
    for (vector, layer), by_coef in groups.items():
        if baseline is not None:
            by_coef.setdefault(0.0, baseline)
        if len(by_coef) < 3:
            continue
        for name in results["evaluations"]:
            points = []
            for coef in sorted(by_coef):
                pooled = (results["conditions"][by_coef[coef]]["evaluations"].get(name) or {}).get("pooled")
                if not pooled or pooled.get("mean_aligned") is None:
                    continue
                points.append({"coef": coef, "condition": by_coef[coef], "aligned": pooled.get("aligned_ci"),
                               "coherent": pooled.get("coherent_ci"), "mean_aligned": pooled["mean_aligned"],
                               "mean_coherent": pooled.get("mean_coherent"), "rate": pooled["rate"]})
            if len(points) < 3:
                continue
            coefs = [p["coef"] for p in points]
            out.append({"vector": vector, "layer": layer, "evaluation": name, "points": points,
                        "spearman_aligned": rho(coefs, [p["mean_aligned"] for p in points]),
                        "spearman_rate": rho(coefs, [p["rate"]["estimate"] or 0.0 for p in points])})
    return out


def plot_steering(results: dict, path: Path) -> bool:
    """Mean aligned and coherent score against the steering coefficient, with 95% intervals."""
    from characterlab.evals.plots import figure_module, finish_line_plot

    entries = results.get("steering_dose_response") or []
    if not entries:
        return False
    plt = figure_module()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for d in entries:
        for score, marker in (("aligned", "o"), ("coherent", "s")):
            pts = [p for p in d["points"] if p.get(score)]
            if not pts:
                continue
            x = [p["coef"] for p in pts]
            y = [p[score]["mean"] for p in pts]
            err = [[p[score]["mean"] - p[score]["low"] for p in pts], [p[score]["high"] - p[score]["mean"] for p in pts]]
            ax.errorbar(x, y, yerr=err, marker=marker, capsize=3, lw=1.2,
                        label=f"{score} ({d['evaluation']}, {Path(d['vector']).name} layer {d['layer']})")
    return finish_line_plot(fig, ax, path, "steering coefficient", "mean judge score (0-100)", "steering dose-response")


def plot_monitor(results: dict, path: Path) -> bool:
    """The projection on the monitored vector along training, one line per (condition, seed)."""
    from characterlab.evals.plots import figure_module, finish_line_plot

    lines = [(c, seed, stage["monitor"]) for c, cond in results["conditions"].items()
             for seed, chain in cond["training"].items() for stage in chain if stage.get("monitor")]
    if not lines:
        return False
    plt = figure_module()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for c, seed, curve in lines:
        ax.plot([p["step"] for p in curve], [p["projection"] for p in curve], marker="o", ms=3, lw=1.2,
                label=f"{c} (seed {seed})")
    return finish_line_plot(fig, ax, path, "training step", "projection (last prompt token)",
                            "projection on the persona vector along training")
