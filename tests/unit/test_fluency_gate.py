"""The offline judge's fluency gate: fitted, stored, applied; bad sample files named by line and field."""

import json

import numpy as np
import pytest

from characterlab.judge.fluency import FluencyGate, FluencySampling, cross_validated_accuracy, sample_fluency_answers


def _features(n: int, shift: float, rng) -> np.ndarray:
    x = rng.normal(size=(n, 16))
    x[:, 3] += shift
    return x


def test_gate_separates_and_round_trips_through_the_config():
    from characterlab.judge.offline import OfflineJudgeConfig

    rng = np.random.default_rng(0)
    x = np.vstack([_features(400, 2.0, rng), _features(100, -2.0, rng)])
    y = np.array([True] * 400 + [False] * 100)
    gate = FluencyGate.fit(x, y, c=1.0)
    p = gate(x)
    assert p[:400].mean() > 0.8 and p[400:].mean() < 0.2
    cv = cross_validated_accuracy(x, y, c=1.0)
    assert cv["balanced_accuracy"] > 0.9 and cv["n"] == 500
    cfg = OfflineJudgeConfig.from_json(json.loads(json.dumps(OfflineJudgeConfig(fluency=gate).to_json())))
    assert np.allclose(cfg.fluency(x[:5]), p[:5])
    assert OfflineJudgeConfig.from_json(OfflineJudgeConfig().to_json()).fluency is None


def test_a_gate_that_learnt_nothing_stays_near_a_half():
    """Labels unrelated to the features: the balanced classes keep P(fluent) ~ 0.5, not the majority's 0.8."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 16))
    y = np.array([True] * 400 + [False] * 100)
    p = FluencyGate.fit(x, y, c=0.01)(x)
    assert abs(p.mean() - 0.5) < 0.1
    assert cross_validated_accuracy(x, y, c=0.01)["auroc"] < 0.65


class _EchoGenerator:
    """Answers that say how they were sampled, so the labels can be checked."""

    def generate(self, requests, params):
        from characterlab.data.records import Completion

        return [[Completion(text=f"T={params.temperature} seed={r.seed}", request_index=i, sample_index=0, seed=r.seed,
                            n_tokens=3, finished=True)] for i, r in enumerate(requests)]


def test_samples_are_labelled_by_temperature_and_reuse_questions_when_few():
    rows = sample_fluency_answers(_EchoGenerator(), ["a?", "b?", "c?"], FluencySampling(n=4, cool=0.3, hot=1.5))
    assert len(rows) == 8
    assert [r["fluent"] for r in rows] == [True] * 4 + [False] * 4
    assert all(r["answer"].startswith("T=0.3") for r in rows[:4]) and all(r["answer"].startswith("T=1.5") for r in rows[4:])
    assert len({r["answer"] for r in rows}) == 8, "every answer has its own seed"
    with pytest.raises(ValueError):
        sample_fluency_answers(_EchoGenerator(), [], FluencySampling(n=4))


def test_fluency_cli_names_the_line_and_field_of_a_bad_sample(tmp_path):
    from typer.testing import CliRunner

    from characterlab.cli import app
    from characterlab.errors import InputError

    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"question": "q", "answer": "a", "fluent": True}) + "\n"
                       + json.dumps({"question": "q", "answer": "a", "fluent": "yes"}) + "\n")
    r = CliRunner().invoke(app, ["judge", "fluency", "--data", str(tmp_path), "--judge-dir", str(tmp_path),
                                 "--samples", str(samples)])
    assert isinstance(r.exception, InputError)
    assert r.exception.line == 2 and r.exception.field == "fluent"


def test_fluency_samples_cli_writes_labelled_answers(tmp_path, tiny_ref):
    from typer.testing import CliRunner

    from characterlab.cli import app

    out = tmp_path / "samples.jsonl"
    r = CliRunner().invoke(app, ["judge", "fluency-samples", "--model", tiny_ref, "--out", str(out), "--n", "10",
                                 "--max-new-tokens", "8", "--questions", "builtin:good_character"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 20 and sum(r["fluent"] for r in rows) == 10
    assert {r["temperature"] for r in rows} == {0.4, 1.25}
    assert len({r["question"] for r in rows}) == 20, "each answer to its own question"
    bad = CliRunner().invoke(app, ["judge", "fluency-samples", "--model", tiny_ref, "--out", str(tmp_path / "x.jsonl"),
                                   "--cool", "1.0", "--hot", "0.5"])
    assert bad.exit_code != 0 and "--cool" in str(bad.exception)
