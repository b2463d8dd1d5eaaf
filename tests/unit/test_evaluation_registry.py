"""A new evaluation is one registered class: it runs through `characterlab run` and `characterlab eval`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
import toy_evaluation  # noqa: E402,F401  (registers toy_brevity)

from characterlab.cli import app  # noqa: E402
from characterlab.errors import InputError  # noqa: E402
from characterlab.evals.registry import evaluations  # noqa: E402
from characterlab.study.spec import parse_study  # noqa: E402

runner = CliRunner()

STUDY = """\
name: toy
model: hf:{model}
conditions:
  - name: base
  - name: sft
    organism:
      kind: sft
      data: {{file: train.jsonl, n: 8}}
      lora: {{rank: 4, epochs: 1, batch_size: 4, max_length: 256, lr: 1.0e-3}}
evaluations:
  - {{name: brevity, kind: toy_brevity, max_chars: 12}}
"""


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARACTERLAB_CACHE", str(tmp_path / "cache"))


def test_the_built_in_evaluations_are_registered():
    assert {"em", "hacks", "trait", "toy_brevity"} <= set(evaluations().kinds())


def test_a_registered_evaluation_is_validated_by_its_own_config():
    with pytest.raises(InputError) as info:
        parse_study("name: a\nconditions: [{name: b}]\nevaluations:\n  - name: x\n    kind: toy_brevity\n"
                    "    max_chars: 0\n  - {name: y, kind: nope}\n", "s.yaml")
    problems = {(p.field, p.line) for p in info.value.problems}
    assert ("evaluations[0].max_chars", 6) in problems
    assert ("evaluations[1].kind", 7) in problems and "toy_brevity" in str(info.value)


def test_a_toy_evaluation_runs_through_characterlab_run(tiny_model_dir, chat_file, tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(chat_file.read_bytes())
    (folder / "study.yaml").write_text(STUDY.format(model=tiny_model_dir))
    out = tmp_path / "run"
    r = runner.invoke(app, ["run", str(folder / "study.yaml"), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "brevity (brevity rate)" in r.output.replace("\n", " ") or "brevity" in r.output
    results = json.loads((out / "results.json").read_text())
    for c in ("base", "sft"):
        rate = results["conditions"][c]["evaluations"]["brevity"]["pooled"]["rate"]
        assert rate["n"] == 4 and 0 <= rate["low"] <= rate["high"] <= 1
    assert results["conditions"]["sft"]["evaluations"]["brevity"]["vs_baseline"]["difference"]["low"] is not None
    html = (out / "report.html").read_text()
    assert "brevity rate" in html and (out / "plots" / "toy_brevity.png").is_file()
    again = runner.invoke(app, ["run", str(folder / "study.yaml"), "--out", str(out), "--quiet"])
    assert "0 units run" in again.output


def test_a_toy_evaluation_gets_its_eval_command(tiny_ref, tmp_path):
    r = runner.invoke(app, ["eval", "toy_brevity", "--help"])
    assert r.exit_code == 0 and "--max-chars" in r.output
    r = runner.invoke(app, ["eval", "toy_brevity", "--model", tiny_ref, "--max-chars", "1000", "--out", str(tmp_path / "e"),
                            "--quiet"])
    assert r.exit_code == 0, r.output
    assert "brevity rate 100.0%" in r.output
    rows = [json.loads(x) for x in (tmp_path / "e" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["brief"] for r in rows)
