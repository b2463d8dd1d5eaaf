"""The persona-mixture model beside a measured fine-tune: pi_evil from ``theory simulate`` against
the persona weight read off the activations along training.

A monitored organism (``monitor:`` in a study, ``--monitor`` on ``train``) records, every K steps,
its projection on the trait's vector, calibrated against the untrained model prompted into the
persona (weight 1) and into its opposite (weight 0): ``persona_weight`` (train/vectors.py). The
theory's steps and the fine-tune's steps are not the same unit, so both are put on training
progress (0 at the start, 1 at the end) and compared at the same progress points; what can agree is
the direction and shape of the change, and how the runs of a config (inoculated or not) order.
"""

from __future__ import annotations

import numpy as np

from characterlab.errors import InputError

PROGRESS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _on_progress(steps: list[float], values: list[float]) -> list[float]:
    s = np.asarray(steps, dtype=float)
    t = (s - s[0]) / (s[-1] - s[0]) if s[-1] > s[0] else np.zeros_like(s)
    return [float(np.interp(p, t, values)) for p in PROGRESS]


def compare_to_theory(curve: list[dict], theory: dict, run: str | None = None) -> dict:
    """``curve``: a monitor's readings (with ``persona_weight``); ``theory``: a ``run_config`` result."""
    if not curve or any("persona_weight" not in p for p in curve):
        raise InputError("the monitor has no calibrated persona weight (a vector folder without its answers.json, "
                         "or pos and neg prompts that read alike)", field="monitor")
    runs = {r["name"]: r for r in theory["runs"]}
    if run is not None and run not in runs:
        raise InputError(f"no run {run!r} in the theory config; it has {', '.join(runs)}", field="theory_run")
    chosen = [runs[run]] if run else theory["runs"]
    measured = _on_progress([p["step"] for p in curve], [p["persona_weight"] for p in curve])
    out = {"progress": list(PROGRESS), "measured": measured, "measured_change": measured[-1] - measured[0], "theory": {}}
    for r in chosen:
        pi = _on_progress([s["step"] for s in r["steps"]], [s["pi"][theory["evil"]] for s in r["steps"]])
        out["theory"][r["name"]] = {"pi_evil": pi, "change": pi[-1] - pi[0],
                                    "same_direction": bool(np.sign(pi[-1] - pi[0]) == np.sign(measured[-1] - measured[0]))}
    return out


def plot_comparison(result: dict, path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(result["progress"], result["measured"], marker="o", lw=2, label="measured: persona weight from activations")
    for name, r in result["theory"].items():
        ax.plot(result["progress"], r["pi_evil"], ls="--", marker="s", label=f"theory: pi_evil ({name})")
    ax.set_xlabel("training progress")
    ax.set_ylabel("weight of the persona")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
