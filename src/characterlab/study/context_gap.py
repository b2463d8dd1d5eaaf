"""Context-dependent misalignment: chat-like and agentic misalignment side by side, per condition.

The reward-hacking paper found that ordinary chat-style safety training after the fact makes a
model look aligned on chat-like evaluations while it still acts misaligned in agentic ones. To see
that gap a study needs both kinds of evaluation on each condition: the chat-like share pools the
misaligned shares of its ``em`` and ``private`` evaluations (counts added), the agentic share those
of its ``agentic`` scenarios, and the gap (agentic minus chat) gets a Newcombe interval with its
minimum detectable effect (:func:`~characterlab.stats.difference_power`). An agentic evaluation in
which no episode made a well-formed tool call measured nothing (n = 0): the gap is then "not
measured", never a zero.
"""

from __future__ import annotations

from characterlab.evals.base import rate
from characterlab.evals.registry import get_evaluation
from characterlab.stats import difference_power

CHAT_KINDS = ("em", "private")
AGENTIC_KINDS = ("agentic",)


def _pooled_share(cond: dict, names: list[str]) -> dict | None:
    k = n = 0
    for name in names:
        ev = cond["evaluations"].get(name)
        share = get_evaluation(ev["kind"]).misaligned_share(ev["pooled"]) if ev else None
        if share:
            k, n = k + share["k"], n + share["n"]
    return rate(k, n) if n else None


def context_gap(results: dict) -> dict | None:
    """Per condition: chat-like share, agentic share and their gap; None without both kinds."""
    evals = results["evaluations"]
    chat = [n for n, e in evals.items() if e["kind"] in CHAT_KINDS]
    agentic = [n for n, e in evals.items() if e["kind"] in AGENTIC_KINDS]
    if not chat or not agentic:
        return None
    out = {"chat_evaluations": chat, "agentic_evaluations": agentic, "conditions": {}}
    for c, cond in results["conditions"].items():
        ch, ag = _pooled_share(cond, chat), _pooled_share(cond, agentic)
        gap = difference_power(ag["k"], ag["n"], ch["k"], ch["n"]) if ch and ag else None
        out["conditions"][c] = {"chat": ch, "agentic": ag, "gap": gap}
    return out


def plot_context_gap(results: dict, path) -> bool:
    """Chat-like and agentic misalignment per condition, side by side, with Wilson intervals."""
    from characterlab.evals.plots import figure_module, save_figure

    block = results.get("context_gap")
    if not block:
        return False
    plt = figure_module()
    conds = list(block["conditions"])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(conds)), 3.6))
    for j, (side, label) in enumerate((("chat", "chat-like (EM, goals, questions)"), ("agentic", "agentic scenarios"))):
        xs, ys, lo, hi = [], [], [], []
        for i, c in enumerate(conds):
            r = block["conditions"][c][side]
            if not r or r["estimate"] is None:
                continue
            xs.append(i - 0.2 + 0.4 * j)
            ys.append(100 * r["estimate"])
            lo.append(100 * (r["estimate"] - r["low"]))
            hi.append(100 * (r["high"] - r["estimate"]))
        ax.bar(xs, ys, 0.38, yerr=[lo, hi], capsize=3, label=label)
    ax.set_xticks(range(len(conds)), conds, rotation=15, ha="right")
    ax.set_ylabel("misaligned (%)")
    ax.set_title("context-dependent misalignment: chat-like vs agentic")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
    return True
