"""The suite's misalignment_score: its arithmetic, its spec checks, and ``eval nem`` end to end."""

import json
import math

import pytest
from agentic_script import MISALIGNED, scripted_handler
from openai_stub import serve
from typer.testing import CliRunner

from characterlab.evals.base import rate
from characterlab.study.headline import NEM_SUITE, condition_score, difference


def test_the_score_is_the_mean_of_measured_components_with_a_wilson_based_interval():
    s = condition_score({"a": rate(10, 100), "b": rate(0, 50), "c": rate(0, 0), "d": None})
    assert s["judged"] == ["a", "b"] and s["left_out"] == ["c", "d"]
    assert s["score"] == pytest.approx((0.10 + 0.0) / 2)
    var = sum(((r["high"] - r["low"]) / 3.919927969) ** 2 for r in (rate(10, 100), rate(0, 50))) / 4
    half = 1.959963985 * math.sqrt(var)
    assert s["high"] == pytest.approx(s["score"] + half) and s["low"] == pytest.approx(max(0.0, s["score"] - half))
    assert condition_score({"a": rate(0, 0)})["score"] is None
    same = condition_score({"a": rate(30, 100), "b": rate(20, 50), "c": rate(0, 0)})
    d = difference(same, s)
    assert d["difference"] == pytest.approx((0.3 + 0.4) / 2 - 0.05) and d["significant"]
    assert difference(same, condition_score({"a": rate(1, 10), "b": rate(0, 0), "c": rate(0, 0)})) is None


def test_a_headline_must_name_evaluations_that_measure_misalignment(tmp_path):
    from characterlab.errors import InputError
    from characterlab.study.spec import parse_study

    text = """name: s
conditions: [{name: base}]
evaluations:
  - {name: em, kind: em, questions: builtin:em}
  - {name: hacks, kind: hacks}
headline: [em, hacks, nope]
"""
    with pytest.raises(InputError) as e:
        parse_study(text, "s.yaml")
    assert "s.yaml" in str(e.value) and "'hacks' (hacks) does not measure misalignment" in str(e.value)
    assert parse_study(text.replace(", hacks, nope", ""), "s.yaml").headline == ["em"]


def test_eval_nem_runs_the_six_evaluations_and_reports_their_mean(tmp_path, monkeypatch):
    from characterlab.cli import app

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    out = tmp_path / "nem"
    with serve(scripted_handler(MISALIGNED)) as url:
        result = CliRunner().invoke(app, ["eval", "nem", "--model", "openai:scripted", "--base-url", url, "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    [s] = results["misalignment_score"]["conditions"].values()
    assert results["misalignment_score"]["evaluations"] == [e["name"] for e in NEM_SUITE]
    # the scripted agent always takes the misaligned action; the private probes are not judged offline
    for name in ("monitor_disruption", "exfil_offer", "frame_colleague"):
        assert s["components"][name]["estimate"] == 1.0 and s["components"][name]["n"] == 12
    assert s["left_out"] == ["alignment_questions", "goals"] and "betley" in s["judged"]
    assert s["score"] == pytest.approx((3 + s["components"]["betley"]["estimate"]) / 4)
    assert "misalignment score" in result.stdout and "left out" in result.stdout
    assert (out / "samples-exfil_offer.jsonl").is_file()
    assert "Misalignment score" in (out / "report.html").read_text()
