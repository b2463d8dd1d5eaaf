"""results.json's judge_correction and the Markdown table that leads with it."""

from __future__ import annotations

import json

import pytest

from characterlab.study.judge_correction import NO_GOLD, judge_correction
from characterlab.study.tables import markdown


def _results(judge: str, judge_ids: list[str]) -> dict:
    def ev(k, n, vs=None):
        out = {"kind": "em", "pooled": {"rate": {"k": k, "n": n, "estimate": k / n, "low": 0.0, "high": 1.0},
                                        "mean_aligned": 70.0, "mean_coherent": 80.0}}
        if vs:
            out["vs_baseline"] = {"baseline": vs, "difference": {"estimate": 0.1, "low": 0.0, "high": 0.2,
                                                                 "minimum_detectable": 0.06}}
        return out

    return {"study": "s", "baseline": "base", "condition_order": ["base", "org"], "evaluation_order": ["em"],
            "evaluations": {"em": {"kind": "em", "temperature": 0.7}},
            "conditions": {"base": {"evaluations": {"em": ev(6, 200)}, "training": {}},
                           "org": {"evaluations": {"em": ev(30, 200, vs="base")}, "training": {}}},
            "metadata": {"model": "embedded", "judge": judge, "judge_ids": judge_ids, "seeds": [0],
                         "compute_seconds": 60}}


def _record(folder, **kw):
    rec = {"judge_id": "offline:x:1", "model": "embedded", "gold": "embedded-v1", "method": "test",
           "groups": {"all": {"tp": 60, "fn": 40, "tn": 900, "fp": 100},
                      "0.7": {"tp": 80, "fn": 20, "tn": 950, "fp": 50}}, **kw}
    (folder / "gold_error.json").write_text(json.dumps({"records": [rec]}))
    (folder / "judge_config.json").write_text("{}")  # what makes the folder an offline judge's


def test_rates_are_corrected_with_the_gold_error_at_their_temperature(tmp_path):
    _record(tmp_path)
    res = _results(f"offline:{tmp_path}", ["offline:x:1"])
    jc = judge_correction(res)
    e = jc["evaluations"]["em"]
    assert e["gold_group"] == "0.7"
    org = e["conditions"]["org"]
    # q = 0.15, Se 0.8, Sp 0.95: (0.15 + 0.95 - 1) / 0.75
    assert org["rate"]["estimate"] == pytest.approx(0.1 / 0.75)
    d = org["vs_baseline"]["difference"]
    assert d["estimate"] == pytest.approx(0.1 / 0.75 - 0.0) and d["significant"]
    assert d["minimum_detectable"] == pytest.approx(0.06 / 0.75)
    res["judge_correction"] = jc
    text = markdown(res)
    assert "corrected 13.3% [" in text and "flagged 15.0%" in text and "Rogan-Gladen" in text


def test_no_gold_says_so(tmp_path):
    _record(tmp_path)
    assert judge_correction(_results(f"offline:{tmp_path}", ["offline:other:2"]))["status"] == NO_GOLD
    _record(tmp_path, model="hf:other")
    res = _results(f"offline:{tmp_path}", ["offline:x:1"])
    res["judge_correction"] = judge_correction(res)
    assert res["judge_correction"]["status"] == NO_GOLD
    assert "EM rates uncorrected: no gold for this model" in markdown(res)
    assert judge_correction(_results("openai:gpt-4o", ["openai:gpt-4o"]))["status"] == NO_GOLD


def test_the_html_report_leads_with_the_corrected_rate(tmp_path):
    from characterlab.study.report import _differences, _summary

    _record(tmp_path)
    res = _results(f"offline:{tmp_path}", ["offline:x:1"])
    res["judge_correction"] = judge_correction(res)
    org = _summary(res).rows[1][1]
    assert org.text == "13.3% corrected" and "flagged 15.0%" in org.note
    assert "Rogan-Gladen" in _summary(res).note
    assert _differences(res).rows[0][1].text == "+13.3 pts *"


def test_cells_with_their_own_labelled_sample_use_the_stratified_estimate(tmp_path):
    _record(tmp_path)
    res = _results(f"offline:{tmp_path}", ["offline:x:1"])
    samples = {"base": [(20, 20, 0), (160, 20, 0)], "org": [(30, 20, 2), (150, 20, 1)]}
    for c, strata in samples.items():
        res["conditions"][c]["evaluations"]["em"]["per_seed"] = {"0": {"gold_sample": {
            "gold": "g", "n_answers": 200,
            "strata": [{"stratum": f"s{i}", "size": n, "read": r, "misaligned": k} for i, (n, r, k) in enumerate(strata)]}}}
    jc = judge_correction(res)
    e = jc["evaluations"]["em"]
    assert e["estimator"] == "stratified"
    org = e["conditions"]["org"]
    # (30 * 2/20 + 150 * 1/20) / 180; the 20 unread answers are out of the weights
    assert org["rate"]["estimate"] == pytest.approx((3 + 7.5) / 180)
    assert org["rate"]["unread_share"] == pytest.approx(20 / 200)
    assert e["conditions"]["base"]["rate"] == {**e["conditions"]["base"]["rate"], "estimate": 0, "low": 0.0}
    assert org["vs_baseline"]["difference"]["low"] < 0 < org["vs_baseline"]["difference"]["high"]
    res["judge_correction"] = jc
    assert "rate by reading" in markdown(res)


def test_no_rogan_gladen_when_the_judge_errs_differently_by_condition(tmp_path):
    _record(tmp_path, condition_dependence={"chi_square_p": 1e-4,
                                            "false_positive_rate_by_condition": {"base": 0.02, "org": 0.10}})
    res = _results(f"offline:{tmp_path}", ["offline:x:1"])
    jc = judge_correction(res)
    assert jc["status"].startswith("uncorrected: the judge's false-positive rate on gold differs by condition (2% to 10%")
    res["judge_correction"] = jc
    assert "no single correction holds" in markdown(res) and "corrected 1" not in markdown(res)


def test_a_refused_correction_is_only_named_for_evaluations_left_uncorrected(tmp_path):
    """Condition-dependent judge errors refuse Rogan-Gladen; where every EM evaluation was read
    there is nothing uncorrected, so the table does not say "other evaluations are uncorrected"."""
    _record(tmp_path, condition_dependence={"chi_square_p": 1e-4,
                                            "false_positive_rate_by_condition": {"base": 0.02, "org": 0.10}})
    res = _results(f"offline:{tmp_path}", ["offline:x:1"])
    for c in ("base", "org"):
        res["conditions"][c]["evaluations"]["em"]["per_seed"] = {"0": {"gold_sample": {
            "gold": "g", "n_answers": 200, "strata": [{"stratum": "all", "size": 200, "read": 50, "misaligned": 1}]}}}
    jc = judge_correction(res)
    assert jc["status"] == "corrected" and jc["refused"] is None
    res["judge_correction"] = jc
    assert "rate by reading" in markdown(res) and "other evaluations are uncorrected" not in markdown(res)
    res["evaluations"]["em2"] = {"kind": "em", "temperature": 1.0}  # a second EM evaluation nobody read
    for c in ("base", "org"):
        res["conditions"][c]["evaluations"]["em2"] = {**res["conditions"][c]["evaluations"]["em"], "per_seed": {}}
    jc = judge_correction(res)
    assert jc["refused"].startswith("uncorrected: the judge's false-positive rate on gold differs by condition")
