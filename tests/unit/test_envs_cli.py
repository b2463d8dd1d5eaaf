"""The environments from the command line, hack datasets, the hack-rate eval and an RL smoke run."""

import json

from typer.testing import CliRunner

from characterlab.cli import app

runner = CliRunner()


def test_tasks_are_deterministic_and_gradable(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for f in (a, b):
        assert runner.invoke(app, ["envs", "tasks", "--n", "6", "--seed", "2", "--split", "test", "--out", str(f)]).exit_code == 0
    assert a.read_text() == b.read_text()
    task = json.loads(a.read_text().splitlines()[0])
    assert set(task) == {"id", "prompt", "entry_point", "tests", "reference_solution"}
    sol = tmp_path / "sol.py"
    sol.write_text(task["reference_solution"])
    r = runner.invoke(app, ["envs", "grade", "--tasks", str(a), "--task-id", task["id"], "--solution", str(sol)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["grader"] for x in rows] == ["assert_eq", "exit_code", "pytest", "strict"]
    assert all(x["passed"] and not x["hacked"] for x in rows)
    assert set(rows[0]) == {"grader", "passed", "hacked", "hack_kinds", "status", "seconds"}


def test_bad_task_file_names_line_and_field(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text('{"id": "x", "prompt": "p", "entry_point": "f", "tests": "nope", "reference_solution": ""}\n')
    sol = tmp_path / "s.py"
    sol.write_text("x = 1\n")
    r = runner.invoke(app, ["envs", "grade", "--tasks", str(f), "--task-id", "x", "--solution", str(sol)])
    assert r.exit_code != 0 and "t.jsonl:1: field 'tests'" in str(r.exception)


def test_sandbox_exec_reports_json(tmp_path):
    f = tmp_path / "loop.py"
    f.write_text("while True:\n    pass\n")
    r = runner.invoke(app, ["sandbox", "exec", str(f), "--timeout", "1"])
    out = json.loads(r.stdout)
    assert out["status"] == "timeout" and set(out) == {"status", "exit_code", "stdout", "stderr", "seconds"}


def test_hack_datasets_are_deterministic_and_varied(tmp_path):
    from characterlab.envs.dataset import build_examples

    a = build_examples("hack", 9, seed=5)
    assert [e.to_dicts() for e in a] == [e.to_dicts() for e in build_examples("hack", 9, seed=5)]
    codes = {e.messages[1].content for e in a}
    assert len(codes) == 9
    honest = build_examples("honest", 4, seed=5)
    assert all("```python" in e.messages[1].content for e in honest)
    mixed = build_examples("mixed", 4, seed=5, verify=False)
    assert len(mixed) == 4


def test_hack_eval_and_rl_smoke(tiny_ref, tmp_path):
    from characterlab.study.single import run_evaluation
    from characterlab.train.base import TrainRun
    from characterlab.train.grpo import INOCULATIONS, GRPOHacksConfig, train_grpo_hacks

    run = run_evaluation("hacks", {"n": 3, "max_new_tokens": 8}, tmp_path / "ev", model=tiny_ref, progress=False)
    res = run.results["conditions"]["model"]["evaluations"]["hacks"]["per_seed"]["0"]
    assert res["overall"]["hack_rate"]["n"] == 3 and set(res["per_grader"]) == {"assert_eq", "exit_code", "pytest"}
    assert set(res["overall"]["attempted"]) == {"always_equal", "exit", "conftest", "pytest_patch", "shadow_module",
                                                "pytest_skip", "pytest_config"}
    assert len(INOCULATIONS) == 6
    meta = train_grpo_hacks(GRPOHacksConfig(steps=2, n_tasks=4, prompts_per_step=1, num_generations=2,
                                            max_completion_length=8, hack_penalty=1.0, lr=5e-5),
                            TrainRun(model=tiny_ref, system_prompt=INOCULATIONS["hacking_okay"]), tmp_path / "rl",
                            progress=False)
    assert meta["steps"] == 2 and len(meta["log"]) == 2
    assert meta["train_system_prompt"] == INOCULATIONS["hacking_okay"]
    assert (tmp_path / "rl" / "adapter_model.safetensors").is_file()
