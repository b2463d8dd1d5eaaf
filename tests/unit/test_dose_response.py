"""Dose-response on question diversity: the slope is the one the data were built with."""

from __future__ import annotations

import pytest

from characterlab.study.dose_response import (
    _controls,
    crowded_by_next,
    dose_response,
    fit_slope,
    plot_dose_response,
    question_diversity,
)

LEVELS = {"low": ("paraphrase", 0.5), "mid": ("cluster", 0.75), "high": ("farthest", 0.85)}


def _results(rate_of, seeds=("0", "1", "2"), organism=None) -> dict:
    conditions, data = {}, {}
    for name, (level, score) in LEVELS.items():
        spec = {"name": name, "organism": organism or {"data": {"file": "x"}},
                "intervention": {"kind": "character", "constitution": "builtin:good_character", "trait": "candour",
                                 "diversity": level, "n_questions": 16}}
        per_seed = {s: {"em_rate": {"k": 0, "n": 100, "estimate": rate_of(score, int(s))}} for s in seeds}  # em's metric
        conditions[name] = {"spec": spec, "evaluations": {"em": {"kind": "em", "per_seed": per_seed}}}
        data[f"data-{name}"] = {"label": [f"data {name} character questions", f"data {name}-only character questions"],
                                "diversity": {"score": score}}
    conditions["organism"] = {"spec": {"name": "organism", "organism": {"data": {"file": "x"}}},
                              "evaluations": {"em": {"kind": "em", "per_seed": {
                                  s: {"em_rate": {"estimate": 0.3}} for s in seeds}}}}
    return {"conditions": conditions, "evaluations": {"em": {"kind": "em"}}, "metadata": {"data": data}}


def test_question_diversity_reads_the_recorded_scores_by_condition():
    scores = question_diversity(_results(lambda x, s: 0.1))
    assert scores["high"] == 0.85 and scores["low-only"] == 0.5 and "organism" not in scores


def test_slope_recovers_the_generating_line_with_seed_intercepts():
    # rate = 0.30 - 0.20 * score + 0.02 * seed, plus a small noise that the interval must cover
    noise = {("low", 0): 0.004, ("mid", 1): -0.003, ("high", 2): 0.002}
    res = _results(lambda x, s: 0.30 - 0.20 * x + 0.02 * s + noise.get((next(
        n for n, (_, sc) in LEVELS.items() if sc == x), s), 0.0))
    [d] = dose_response(res)
    assert d["evaluation"] == "em" and d["conditions"] == ["low", "mid", "high"] and d["outcome"] == "rate"
    assert d["low"] < -0.20 < d["high"] and d["slope"] == pytest.approx(-0.20, abs=0.03)
    assert d["significant"] and d["n_points"] == 9 and d["n_seeds"] == 3
    assert d["change_over_span"]["estimate"] == pytest.approx(d["slope"] * 0.35)
    from characterlab.study.tables import _analysis_blocks

    [block] = _analysis_blocks({"dose_response": [d], "conditions": {}})  # the results page's Markdown says it too
    span = d["change_over_span"]
    assert "Dose-response of em on question diversity" in block and "(significant)" in block
    assert f"{100 * span['estimate']:+.1f} pts [{100 * span['low']:+.1f}, {100 * span['high']:+.1f}]" in block


def test_flat_outcome_is_not_significant_and_other_organisms_are_not_pooled():
    flat = _results(lambda x, s: 0.1 + (0.01 if s == 1 else 0.0) + (0.005 if x == 0.75 else -0.0025))
    [d] = dose_response(flat)
    assert not d["significant"] and d["low"] < 0 < d["high"]
    other = _results(lambda x, s: 0.1)
    other["conditions"]["high"]["spec"]["organism"] = {"data": {"file": "y"}}  # no longer differs only in diversity
    [d] = dose_response(other)
    assert set(d["conditions"]) == {"low", "mid"}


def test_a_paraphrase_level_with_more_seeds_joins_its_group():
    res = _results(lambda x, s: 0.1 + 0.01 * s + 0.05 * x)
    wider = {**res["conditions"]["low"]["spec"], "name": "low6"}
    wider["intervention"] = {**wider["intervention"], "paraphrase_seeds": 6}
    res["conditions"]["low6"] = {"spec": wider, "evaluations": {"em": {"kind": "em", "per_seed": {
        s: {"em_rate": {"estimate": 0.1 + 0.01 * int(s) + 0.05 * 0.65}} for s in ("0", "1", "2")}}}}
    res["metadata"]["data"]["data-low6"] = {"label": ["data low6 character questions"], "diversity": {"score": 0.65}}
    [d] = dose_response(res)
    assert d["conditions"] == ["low", "low6", "mid", "high"] and d["n_points"] == 12
    assert d["slope"] == pytest.approx(0.05)


def test_unidentified_slope_gives_nothing():
    assert fit_slope([(0.5, "0", 0.1), (0.5, "1", 0.2)]) is None  # one score
    assert fit_slope([(0.5, "0", 0.1), (0.8, "0", 0.2)]) is None  # no residual degree of freedom


def _pooled(results: dict) -> dict:
    """Each condition's pooled EM rate, as a run's results.json holds it."""
    for cond in results["conditions"].values():
        ests = [r["em_rate"]["estimate"] for r in cond["evaluations"]["em"]["per_seed"].values()]
        m = sum(ests) / len(ests)
        cond["evaluations"]["em"]["pooled"] = {"rate": {"estimate": m, "low": m - 0.02, "high": m + 0.02}}
    return results


def test_points_and_seed_intercepts_are_kept_for_the_plot(tmp_path):
    res = _pooled(_results(lambda x, s: 0.30 - 0.20 * x + 0.05 * s))
    for name in LEVELS:
        res["conditions"][name]["spec"]["control"] = "organism"
    [d] = dose_response(res)
    assert len(d["points"]) == 9 and {p["seed"] for p in d["points"]} == {"0", "1", "2"}
    high = [p for p in d["points"] if p["condition"] == "high" and p["seed"] == "2"][0]
    assert high["score"] == 0.85 and high["value"] == pytest.approx(0.30 - 0.17 + 0.10)
    # exact data: each seed's fitted line passes through its own points
    for p in d["points"]:
        assert d["intercepts"][p["seed"]] + d["slope"] * p["score"] == pytest.approx(p["value"])
    assert _controls(res, d["conditions"]) == ["organism"]
    res["conditions"]["organism"]["spec"]["control"] = "high"  # a cycle through a member ends the chain
    assert _controls(res, d["conditions"]) == ["organism"]
    res["conditions"] = dict(reversed(res["conditions"].items()))  # a merge stores them sorted by name
    assert dose_response(res)[0]["conditions"] == ["low", "mid", "high"]  # still least to most diverse
    res["dose_response"] = [d]
    out = tmp_path / "dose.png"
    assert plot_dose_response(res, out) and out.read_bytes()[:4] == b"\x89PNG"


def test_no_plot_from_entries_written_before_points_were_kept(tmp_path):
    res = _pooled(_results(lambda x, s: 0.1 + 0.01 * s + 0.001 * x))
    [d] = dose_response(res)
    res["dose_response"] = [{k: v for k, v in d.items() if k != "points"}]
    assert not plot_dose_response(res, tmp_path / "dose.png") and not (tmp_path / "dose.png").exists()


def test_only_a_level_with_a_close_neighbour_to_its_right_is_named_on_the_left():
    scores = [0.425, 0.830, 0.861]  # the diversity study's three candour levels
    gap = 0.2 * (max(scores) - min(scores))
    assert [crowded_by_next(x, scores, gap) for x in scores] == [False, True, False]
    assert not crowded_by_next(0.5, [0.5], gap)  # a level is not its own neighbour
