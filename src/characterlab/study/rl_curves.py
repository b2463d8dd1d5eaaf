"""What RL did along training, per condition: the Goodhart curve of the sycophancy organism
(reward-model score against true accuracy and agreement with the user's false belief) and the
hack rate of the hacking organism, from each RL unit's per-step log (``rl_log`` in a condition's
training chain).

GRPO logs one value per step from a handful of completions, so single steps are noisy: a
condition's curve is the mean over its seeds, smoothed with a centred moving window, and the
summary compares the first and the last fifth of the steps (means of the raw values). The
Goodhart question - does the reward keep rising while the truth falls? - is answered by those
two differences side by side, and by the step at which smoothed accuracy peaked.
"""

from __future__ import annotations

from pathlib import Path

SKIP = ("step", "kl")  # not outcomes: the step index, and the KL term TRL logs beside them


def _mean_curve(logs: list[list[dict]], field: str) -> list[tuple[int, float]]:
    """The mean over seeds of ``field`` at each step some seed logged it."""
    by_step: dict[int, list[float]] = {}
    for log in logs:
        for p in log:
            if p.get(field) is not None:
                by_step.setdefault(int(p["step"]), []).append(float(p[field]))
    return [(s, sum(v) / len(v)) for s, v in sorted(by_step.items())]


def smooth(values: list[float], window: int) -> list[float]:
    """Centred moving average (shorter at the ends)."""
    half = window // 2
    return [sum(values[max(0, i - half):i + half + 1]) / len(values[max(0, i - half):i + half + 1])
            for i in range(len(values))]


def _rl_logs(cond: dict) -> list[list[dict]]:
    return [stage["rl_log"] for chain in cond["training"].values() for stage in chain if stage.get("rl_log")]


def rl_curves(results: dict) -> dict[str, dict]:
    """Per condition with an RL log: each logged quantity's start (first fifth of the steps), end
    (last fifth), their difference, and the step where its smoothed curve peaked."""
    out: dict[str, dict] = {}
    for name, cond in results["conditions"].items():
        logs = _rl_logs(cond)
        if not logs:
            continue
        fields = [f for f in dict.fromkeys(k for log in logs for p in log for k in p) if f not in SKIP]
        summary = {}
        for f in fields:
            curve = _mean_curve(logs, f)
            if len(curve) < 2:
                continue
            fifth = max(1, len(curve) // 5)
            start = sum(v for _, v in curve[:fifth]) / fifth
            end = sum(v for _, v in curve[-fifth:]) / fifth
            smoothed = smooth([v for _, v in curve], max(3, len(curve) // 10))
            peak = max(range(len(curve)), key=smoothed.__getitem__)
            summary[f] = {"start": start, "end": end, "change": end - start, "peak_step": curve[peak][0],
                          "steps": len(curve)}
        if summary:
            out[name] = {"seeds": len(logs), "fields": summary}
    return out


def plot_rl_curves(results: dict, path: Path) -> bool:
    """One panel per logged quantity (reward-model score, true accuracy, agreement; or grader
    reward and hack rate), one line per condition: the seed mean, smoothed, over the raw means."""
    from characterlab.evals.plots import figure_module, save_figure

    conds = {n: _rl_logs(c) for n, c in results["conditions"].items()}
    conds = {n: logs for n, logs in conds.items() if logs}
    if not conds:
        return False
    fields = [f for f in dict.fromkeys(k for logs in conds.values() for log in logs for p in log for k in p)
              if f not in SKIP]
    plt = figure_module()
    fig, axes = plt.subplots(len(fields), 1, figsize=(6, 2.3 * len(fields)), sharex=True, squeeze=False)
    for ax, f in zip(axes[:, 0], fields):
        for i, (name, logs) in enumerate(conds.items()):
            curve = _mean_curve(logs, f)
            if not curve:
                continue
            xs, ys = [s for s, _ in curve], [v for _, v in curve]
            line, = ax.plot(xs, smooth(ys, max(3, len(ys) // 10)), lw=1.5, label=name,
                            ls=("-", "--", ":", "-.")[i % 4])
            ax.plot(xs, ys, lw=0.6, alpha=0.3, color=line.get_color())
        ax.set_ylabel(f.replace("_", " "), fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].set_title("along RL training (mean over seeds; thin: per step, thick: smoothed)", fontsize=9)
    axes[0, 0].legend(fontsize=7)
    axes[-1, 0].set_xlabel("training step")
    save_figure(fig, path)
    return True
