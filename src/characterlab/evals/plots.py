"""Plots of evaluation results (matplotlib, headless): per-condition bars and per-question maps.

Each takes the study's ``results`` (conditions in the study's order) and writes one PNG; each
returns False when there is nothing to draw.
"""

from __future__ import annotations

import io
from pathlib import Path

from characterlab.data.files import atomic_write_bytes
from characterlab.evals.base import pooled_by_condition


def figure_module():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    figure_module().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def finish_line_plot(fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> bool:
    """Labels, a small legend and a light grid on a line plot, saved to ``path``; True (drawn)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    return True


def _bars(results: dict, names: list[str], path: Path, title: str, ylabel: str, value_of, floor: bool = False,
          points: bool = False) -> bool:
    """One group per condition, one mark per evaluation; ``value_of(pooled)`` gives (value, low, high)
    or None. ``points`` draws a dot with whiskers instead of a bar, for scores whose zero means
    nothing: the axis then spans the data and its intervals, not 0 to 100."""
    if not names:
        return False
    plt = figure_module()
    conds = [c for c, cond in results["conditions"].items() if any(n in cond["evaluations"] for n in names)]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(conds) * max(1, len(names)) ** 0.5), 3.6))
    width = 0.8 / len(names)
    for j, ename in enumerate(names):
        xs, ys, lo, hi = [], [], [], []
        for i, c in enumerate(conds):
            ev = results["conditions"][c]["evaluations"].get(ename)
            v = None if ev is None else value_of(ev["pooled"])
            if v is None:  # not run, or nothing scored: no mark
                continue
            m, low, high = v
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(m)
            lo.append(max(0.0, m - low) if low is not None else 0.0)
            hi.append(max(0.0, high - m) if high is not None else 0.0)
        if points:
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3, label=ename)
        else:
            ax.bar(xs, ys, width * 0.9, yerr=[lo, hi], capsize=3, label=ename)
    ax.set_xticks(range(len(conds)), conds, rotation=15, ha="right")
    ax.set_xlim(-0.6, len(conds) - 0.4)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if floor:
        ax.set_ylim(bottom=0)
    if len(names) > 1:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
    return True


def rate_value(pooled: dict) -> tuple[float, float, float] | None:
    """A pooled rate in percent with its Wilson 95% bounds; None when nothing was scored."""
    r = pooled["rate"]
    if r["estimate"] is None:
        return None
    return 100 * r["estimate"], 100 * r["low"], 100 * r["high"]


def mean_value(pooled: dict) -> tuple[float, float | None, float | None]:
    """A pooled mean score with its 95% interval (a bootstrap over questions, or the spread over seeds)."""
    ci = pooled.get("ci") or pooled.get("seed_spread")
    m = pooled["mean"] or 0.0
    return (m, ci["low"], ci["high"]) if ci else (m, None, None)


def plot_rates(results: dict, names: list[str], path: Path, title: str) -> bool:
    """Rates in percent with their Wilson 95% whiskers."""
    return _bars(results, names, path, title, "rate (%) with 95% CI", rate_value, floor=True)


def plot_means(results: dict, names: list[str], path: Path, title: str) -> bool:
    """Mean scores with their 95% intervals (a bootstrap over questions, or the spread over seeds)."""
    return _bars(results, names, path, title, "score (95% CI)", mean_value, points=True)


def plot_per_question(results: dict, ename: str, path: Path) -> bool:
    """Heat map of the EM rate per question (rows) and condition (columns)."""
    import numpy as np

    pooled = pooled_by_condition(results, ename)
    conds = list(pooled)
    qids = list(pooled[conds[0]]["per_question"])
    if not qids:
        return False
    plt = figure_module()
    grid = np.full((len(qids), len(conds)), np.nan)
    for j, c in enumerate(conds):
        pq = pooled[c]["per_question"]
        for i, q in enumerate(qids):
            v = pq.get(q, {}).get("em_rate")
            grid[i, j] = np.nan if v is None else 100 * v
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(conds), 0.8 + 0.35 * len(qids)))
    top = max(10.0, float(np.nanmax(grid)) if np.isfinite(grid).any() else 10.0)
    im = ax.imshow(grid, aspect="auto", cmap="Reds", vmin=0, vmax=top)
    for i in range(len(qids)):
        for j in range(len(conds)):
            ax.text(j, i, "–" if np.isnan(grid[i, j]) else f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(conds)), conds, rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(len(qids)), qids, fontsize=8)
    ax.set_title(f"{ename}: EM rate per question (%)", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    save_figure(fig, path)
    return True
