"""A study's results as plain-text tables: the console table after a run, and Markdown for READMEs.

Both are computed from ``results.json`` alone, so a README table is a copy of what a run wrote,
never retyped (``characterlab report RUN --markdown``, ``--into README.md``). Each cell of a rate
carries its Wilson interval and counts; each difference from the baseline carries its Newcombe
interval, ``*`` when that interval excludes 0 and ``n.s.`` with the minimum detectable increase
when it does not.
"""

from __future__ import annotations

import re
from pathlib import Path

from characterlab.errors import InputError


def rate_text(r: dict) -> str:
    if r["estimate"] is None:
        return f"– ({r['k']}/{r['n']})"
    return f"{100 * r['estimate']:.1f}% [{100 * r['low']:.1f}, {100 * r['high']:.1f}] ({r['k']}/{r['n']})"


def mean_text(p: dict) -> str:
    ci = p.get("ci") or p.get("seed_spread")
    if p.get("mean") is None:
        return "–"
    return f"{p['mean']:.1f}" + (f" [{ci['low']:.1f}, {ci['high']:.1f}]" if ci else "")


def difference_text(d) -> str:
    """``+12.5 pts [+6.6, +20.6] *`` or ``+2.1 pts [-3.0, +7.4] n.s. (MDE 8.0)``; '' when there is none."""
    if isinstance(d, float):
        return f"{d:+.2f}"
    if not d or d.get("estimate") is None:
        return ""
    if d.get("scale") == "mean":  # a difference of means with its interval (not percentage points)
        return f"{d['estimate']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]" + (" *" if d.get("significant") else " n.s.")
    text = f"{100 * d['estimate']:+.1f} pts [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
    if d.get("significant"):
        return text + " *"
    mde = d.get("minimum_detectable")
    return text + " n.s." + (f" (MDE {100 * mde:.1f})" if mde is not None else "")


def summary_rows(results: dict, with_differences: bool = False) -> list[tuple[str, list[str]]]:
    """(condition, one cell per evaluation): the pooled rate or mean, and optionally its difference."""
    from characterlab.evals.base import measured_nothing
    from characterlab.evals.registry import get_evaluation
    from characterlab.study.results import in_spec_order

    results = in_spec_order(results)
    out = []
    for c, cond in results["conditions"].items():
        cells = []
        for name in results["evaluations"]:
            ev = cond["evaluations"].get(name)
            if ev is None:  # the condition does not run this evaluation
                cells.append("–")
                continue
            if measured_nothing(get_evaluation(ev["kind"]), ev["pooled"]):
                cells.append(f"not measured ({ev['pooled']['rate']['n']}, none measurable)")
                continue
            corrected = corrected_cell(results, c, name)
            cell = mean_text(ev["pooled"]) if "rate" not in ev["pooled"] else rate_text(ev["pooled"]["rate"])
            if corrected:
                cell = f"{_corrected_rate_text(corrected['rate'])}; flagged {cell}"
            if with_differences:
                for key, other in (("vs_baseline", "baseline"), ("vs_control", "control")):
                    d = (corrected or {}).get(key, {}).get("difference") or (ev.get(key) or {}).get("difference")
                    if diff := difference_text(d):
                        cell += f"; vs {ev[key][other]} {diff}"
            cells.append(cell)
        out.append((c, cells))
    return out


def corrected_cell(results: dict, condition: str, evaluation: str) -> dict | None:
    """The judge-corrected figures of one cell, when the study's judge has gold for its model."""
    jc = results.get("judge_correction") or {}
    return ((jc.get("evaluations") or {}).get(evaluation) or {}).get("conditions", {}).get(condition)


def _corrected_rate_text(r: dict | None) -> str:
    if not r or r.get("estimate") is None:
        return "corrected: – (the judge is not clearly better than chance on gold)"
    what = "by reading" if r.get("estimator") == "stratified" else "corrected"
    return f"{what} {100 * r['estimate']:.1f}% [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"


def correction_note(results: dict) -> str | None:
    jc = results.get("judge_correction") or {}
    if jc.get("status") == "corrected":
        evals = jc["evaluations"]
        read = [e for e, v in evals.items() if v.get("estimator") == "stratified"]
        rg = {e: v for e, v in evals.items() if v.get("estimator", "rogan-gladen") == "rogan-gladen"}
        parts = []
        if read:
            parts.append(f"{', '.join(read)}: the rate by reading, from each cell's own blind-labelled sample in the "
                         "gold set (stratified by the judge's verdict, each stratum weighted by its size; "
                         "Wilson interval at Kish's effective sample size, Newcombe's for differences)")
        if rg:
            groups = ", ".join(f"{e} at {'t=' + v['gold_group'] if v['gold_group'] != 'all' else 'all temperatures'}"
                               f" (sensitivity {100 * v['judge_error']['sensitivity']:.0f}%, specificity "
                               f"{100 * v['judge_error']['specificity']:.0f}%)" for e, v in rg.items())
            parts.append(f"{groups}: the Rogan-Gladen estimate from the judge's error on the gold set `{jc.get('gold')}`, "
                         "which assumes that error is the same in every condition; its interval carries the gold "
                         "set's uncertainty")
        if jc.get("refused"):
            parts.append(f"other evaluations are {jc['refused']}")
        return "EM rates lead with the corrected estimate (" + "; ".join(parts) + "); `flagged` is the judge's own rate"
    if jc.get("status"):
        return f"EM rates {jc['status']}"
    return None


def markdown(results: dict) -> str:
    """One Markdown table: each evaluation's rate (difference from the baseline), the score means
    each evaluation reports (named with it), and each condition's training loss, first and last
    steps."""
    from characterlab.evals.base import pooled_by_condition
    from characterlab.evals.registry import get_evaluation
    from characterlab.study.results import in_spec_order

    results = in_spec_order(results)
    evals = results["evaluations"]
    extras = {n: list(get_evaluation(e["kind"]).summary_extras(next(iter(pooled_by_condition(results, n).values()))))
              for n, e in evals.items()}
    header = ["condition", *(f"{n}: {get_evaluation(e['kind']).title}" for n, e in evals.items()),
              *(f"{' / '.join(cols)} ({n})" for n, cols in extras.items() if cols), "train loss (first → last 5 steps)"]
    headline = (results.get("misalignment_score") or {}).get("conditions")
    if headline:
        header.insert(1, "misalignment score (mean of measured)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (c, cells), cond in zip(summary_rows(results, with_differences=True), results["conditions"].values()):
        means = [" / ".join(get_evaluation(evals[n]["kind"]).summary_extras(cond["evaluations"][n]["pooled"]).values())
                 if n in cond["evaluations"] else "–" for n, cols in extras.items() if cols]
        if headline:
            cells = [_headline_text(headline[c]), *cells]
        lines.append("| " + " | ".join([c, *cells, *means, _loss_text(cond)]) + " |")
    meta = results["metadata"]
    foot = [f"Study `{results['study']}`, model `{meta['model']}`, judge `{meta['judge']}`, seeds {meta['seeds']}; "
            f"compute {meta['compute_seconds'] / 60:.1f} min"]
    by_kind = meta.get("peak_rss_mb_by_unit_kind") or {}
    top = max(by_kind, key=by_kind.get) if by_kind else None
    unit_peak = f"largest of any unit {by_kind[top] / 1024:.2f} GB ({top})" if top else None
    if rss := meta.get("peak_rss_mb_this_run"):
        foot.append(f"peak resident memory {rss['process'] / 1024:.2f} GB (last run)" + (f", {unit_peak}" if unit_peak else ""))
    elif unit_peak:  # a merge of runs: no one last run
        foot.append(f"peak resident memory: {unit_peak}")
    if merged := meta.get("merged_from"):
        foot.append(f"merged from {len(merged)} runs")
    if agreement := meta.get("judge_agreement"):
        foot.append(f"judge error: per-model EM rates {agreement.get('em_rate_all_answers_mean_abs_diff_points', 0):.2f} "
                    f"points from GPT-4o's on average on {agreement.get('n_models', '?')} held-out models")
    if correction := correction_note(results):
        foot.append(correction)
    note = ("`*`: the Newcombe 95% interval of the difference excludes 0; `n.s.`: it does not, and MDE is the "
            "smallest increase these samples detect with 80% power.")
    return "\n".join(lines) + "\n\n" + "; ".join(foot) + ". " + note + "\n" + "".join(_analysis_blocks(results))


def _ci(d: dict | None, fmt: str = "{:.1f}") -> str:
    return "–" if not d else f"{fmt.format(d['mean'])} [{fmt.format(d['low'])}, {fmt.format(d['high'])}]"


def _analysis_blocks(results: dict) -> list[str]:
    """What a study computed across conditions, as Markdown: diversity dose-responses, the steering dose-response, the
    projection-vs-behaviour correlation, the monitors' projection shifts, RL curves, the context gap."""
    out = []
    for d in results.get("steering_dose_response") or []:
        rows = [f"| {p['coef']:+g} | {p['condition']} | {_ci(p.get('aligned'))} | {_ci(p.get('coherent'))} | "
                f"{rate_text(p['rate'])} |" for p in d["points"]]
        rho = d["spearman_aligned"]
        out.append(f"\nSteering dose-response ({Path(d['vector']).name} at layer {d['layer']}, {d['evaluation']}); Spearman "
                   f"of coefficient and mean aligned score {'–' if rho is None else f'{rho:+.2f}'}:\n\n"
                   "| coef | condition | mean aligned (95% CI) | mean coherent (95% CI) | rate |\n|---|---|---|---|---|\n"
                   + "\n".join(rows) + "\n")
    for d in results.get("dose_response") or []:
        scores = ", ".join(f"{c} {d['diversity_scores'][c]:.2f}" for c in d["conditions"])
        span = d["change_over_span"]
        unit = " pts" if d["outcome"] == "rate" else ""
        scale = 100 if d["outcome"] == "rate" else 1
        out.append(f"\nDose-response of {d['evaluation']} on question diversity ({d['trait']}; diversity {scores}; "
                   f"{d['n_points']} points over {d['n_seeds']} seed(s), one intercept per seed): change over the span "
                   f"{scale * span['estimate']:+.1f}{unit} [{scale * span['low']:+.1f}, {scale * span['high']:+.1f}], "
                   f"p = {d['p_value']:.2f} ({'significant' if d['significant'] else 'n.s.'}).\n")
    for d in results.get("projection_vs_behaviour") or []:
        out.append(f"\nProjection ({d['projection']}) vs {d['behaviour']} across {d['n_conditions']} conditions: Spearman "
                   f"{d['spearman']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}], "
                   f"{'the interval excludes 0' if d['significant'] else 'n.s.: the interval includes 0'}.\n")
    shifts = [(c, seed, stage) for c, cond in results["conditions"].items() for seed, chain in cond.get("training", {}).items()
              for stage in chain if stage.get("monitor")]
    if shifts:
        rows = []
        for c, seed, stage in shifts:
            m = stage["monitor"]
            w = [p.get("persona_weight") for p in (m[0], m[-1])]
            weight = f"{w[0]:.3f} → {w[1]:.3f}" if None not in w else "–"
            opts = ", ".join(k for k in ("steer", "ablate") if k in (stage.get("vectors") or {})) or "none"
            rows.append(f"| {c} | {seed} | {opts} | {m[0]['projection']:.2f} → {m[-1]['projection']:.2f} "
                        f"({stage['projection_shift']:+.2f}) | {weight} |")
        out.append("\nMonitored training (projection of the EM prompts' last token, hooks lifted):\n\n"
                   "| condition | seed | vector in training | projection first → last (shift) | persona weight |\n"
                   "|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    for c, d in (results.get("rl_curves") or {}).items():
        rows = [f"| {f.replace('_', ' ')} | {v['start']:.3f} | {v['end']:.3f} | {v['change']:+.3f} | {v['peak_step']} |"
                for f, v in d["fields"].items()]
        rms = [(seed, stage["reward_model"]) for seed, chain in results["conditions"][c]["training"].items()
               for stage in chain if stage.get("reward_model")]
        rm = "".join(f" Reward model (seed {seed}): held-out accuracy on the raters' labels {_fmt(r['heldout_accuracy'])} "
                     f"({r['n_heldout_pairs']} pairs), AUROC of its score for the truth "
                     f"{_fmt((r.get('heldout_truth') or {}).get('auroc'))}." for seed, r in rms)
        out.append(f"\nAlong RL training, {c} (mean of {d['seeds']} seed(s); first and last fifth of the steps).{rm}\n\n"
                   "| logged | first fifth | last fifth | change | peak step (smoothed) |\n|---|---|---|---|---|\n"
                   + "\n".join(rows) + "\n")
    gap = results.get("context_gap")
    if gap:
        order = [c for c in results.get("condition_order", []) if c in gap["conditions"]] or list(gap["conditions"])
        rows = [f"| {c} | {rate_text(d['chat']) if d['chat'] else '–'} | "
                f"{rate_text(d['agentic']) if d['agentic'] else 'not measured'} | {difference_text(d['gap']) or '–'} |"
                for c, d in ((c, gap["conditions"][c]) for c in order)]
        out.append("\nContext-dependent misalignment (chat-like vs agentic):\n\n| condition | chat-like | agentic | "
                   "agentic - chat |\n|---|---|---|---|\n" + "\n".join(rows) + "\n")
    return out


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _headline_text(s: dict) -> str:
    if s["score"] is None:
        return "nothing measured"
    return (f"{100 * s['score']:.1f}% [{100 * s['low']:.1f}, {100 * s['high']:.1f}] "
            f"({len(s['judged'])} of {len(s['components'])}; left out: {', '.join(s['left_out']) or 'none'})")


def _loss_text(cond: dict) -> str:
    parts = []
    for chain in cond.get("training", {}).values():
        for stage in chain:
            curve = [p["loss"] for p in stage.get("loss_curve") or []]
            if curve:
                head, tail = curve[:5], curve[-5:]
                parts.append(f"{sum(head) / len(head):.2f} → {sum(tail) / len(tail):.2f}")
    return ", ".join(parts) or "–"


def replace_marked_block(path: Path, name: str, text: str) -> None:
    """Put ``text`` between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` in ``path``."""
    from characterlab.data.files import atomic_write_text, read_text

    source = read_text(path)
    pattern = re.compile(rf"(<!-- results:{re.escape(name)} -->\n)(.*?)(<!-- /results:{re.escape(name)} -->)", re.S)
    if not pattern.search(source):
        raise InputError(f"no '<!-- results:{name} -->' ... '<!-- /results:{name} -->' block to fill", path,
                         field="into")
    atomic_write_text(path, pattern.sub(lambda m: m.group(1) + text + m.group(3), source, count=1))
