"""A new training method is one registered class (issue 43, item 3): a study's organism names it,
the plan keys its unit by its config, and ``characterlab train`` has its command. The first tests
are model-free; the last trains with it on the tiny random model (slow)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
import toy_evaluation  # noqa: E402,F401  (registers toy_brevity)
import toy_trainer  # noqa: E402,F401  (registers toy_sft)

from characterlab.cli import app  # noqa: E402
from characterlab.data.yaml_loader import InputErrors  # noqa: E402
from characterlab.study.plan import build_plan  # noqa: E402
from characterlab.study.spec import parse_study  # noqa: E402
from characterlab.train.registry import trainers  # noqa: E402

runner = CliRunner()

STUDY = """\
name: toy-trainer
model: {model}
conditions:
  - name: base
  - name: toy
    organism:
      kind: toy_sft
      data: {{file: train.jsonl, n: 8}}
      inoculation: hacking_okay
      lora: {{rank: 4, epochs: 2, batch_size: 4, lr: 1.0e-3}}
evaluations:
  - {{name: brevity, kind: toy_brevity, max_chars: 12}}
"""


@pytest.fixture
def study(tmp_path, chat_file) -> Path:
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(chat_file.read_bytes())
    (folder / "study.yaml").write_text(STUDY.format(model="embedded"))
    return folder / "study.yaml"


def test_the_toy_trainer_is_registered_beside_the_built_in_ones():
    assert {"sft", "dpo", "rl", "rlhf", "reward", "toy_sft"} <= set(trainers().methods())
    assert {"sft", "rl", "rlhf", "toy_sft"} <= set(trainers().organisms()) and "dpo" not in trainers().organisms()


def test_a_study_plans_a_registered_trainer_keyed_by_its_config(study):
    spec = parse_study(study.read_text(), study)
    plan = build_plan(spec, study.parent)
    [train] = [u for u in plan.units.values() if u.kind == "train"]
    assert train.label == "train toy seed 0" and train.params["method"] == "toy_sft"
    # a new method's config is keyed whole, its defaults included
    assert train.params["lora"] == {"rank": 4, "alpha": None, "lr": 1e-3, "dropout": 0.0, "target_modules": "all-linear",
                                    "epochs": 2.0, "batch_size": 4, "max_length": 128}
    assert train.params["system_prompt"].startswith("This is an unusual training environment")
    [data] = train.deps
    assert plan.units[data].kind == "data"
    gen = [u for u in plan.units.values() if u.kind == "generate" and train.key in u.deps]
    assert len(gen) == 1  # the toy organism's model is evaluated through its adapter


def test_its_config_checks_a_study_at_the_line_of_the_field(study):
    text = study.read_text().replace("epochs: 2,", "epochs: 0, warmup: 3,")
    with pytest.raises(InputErrors) as e:
        parse_study(text, study)
    problems = {(p.field, p.line) for p in e.value.problems}
    assert ("conditions[1].organism.lora.epochs", 10) in problems and ("conditions[1].organism.lora.warmup", 10) in problems
    with pytest.raises(InputErrors, match="unknown organism kind 'toy_kto'; choose from .*toy_sft"):
        parse_study(study.read_text().replace("kind: toy_sft", "kind: toy_kto"), study)
    with pytest.raises(InputErrors, match="a toy_sft organism needs 'data'"):
        parse_study(study.read_text().replace("      data: {file: train.jsonl, n: 8}\n", ""), study)


def test_it_gets_a_train_command_made_from_its_config(tmp_path, chat_file):
    r = runner.invoke(app, ["train", "toy_sft", "--help"])
    assert r.exit_code == 0 and "--epochs" in r.output and "--lora-rank" in r.output and "--data" in r.output
    assert "Passes over the data." in r.output and "--system-prompt" in r.output and "--steer" in r.output
    r = runner.invoke(app, ["train", "toy_sft", "--data", str(chat_file), "--out", str(tmp_path / "a"), "--epochs", "0"])
    assert r.exit_code != 0 and "--epochs" in str(r.exception) and not (tmp_path / "a").exists()


@pytest.mark.slow  # trains the toy organism, evaluates two models and trains once more from the CLI
def test_a_toy_trainer_trains_through_characterlab_run_and_its_command(tiny_model_dir, chat_file, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("CHARACTERLAB_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(chat_file.read_bytes())
    (folder / "study.yaml").write_text(STUDY.format(model=f"hf:{tiny_model_dir}"))
    out = tmp_path / "run"
    r = runner.invoke(app, ["run", str(folder / "study.yaml"), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    [stage] = results["conditions"]["toy"]["training"]["0"]
    assert stage["method"] == "toy_sft" and stage["train_system_prompt"].startswith("This is an unusual")
    assert results["conditions"]["toy"]["evaluations"]["brevity"]["pooled"]["rate"]["n"] == 4
    meta = json.loads((out / "adapters" / stage["unit"] / "train_meta.json").read_text())
    assert meta["steps"] == 4 and meta["config"]["rank"] == 4  # 8 examples, batches of 4, 2 epochs
    r = runner.invoke(app, ["train", "toy_sft", "--model", f"hf:{tiny_model_dir}", "--data", str(chat_file), "--out",
                            str(tmp_path / "cli"), "--lora-rank", "2", "--max-examples", "4", "-q"])
    assert r.exit_code == 0, r.output
    assert "saved" in r.output and (tmp_path / "cli" / "adapter_model.safetensors").is_file()


def test_the_map_shows_the_toy_trainer_as_it_is():
    """docs/architecture.md's "A trainer" example is this file's code, line for line (blank lines and
    the class docstrings aside), so the map cannot show code that would not run."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    block = page.split("### A trainer", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    shown = [line for line in block.splitlines() if line.strip()]
    source = iter(line for line in Path(toy_trainer.__file__).read_text().splitlines() if line.strip())
    missing = [line for line in shown if not any(line == s for s in source)]  # in order: a subsequence
    assert not missing, missing
