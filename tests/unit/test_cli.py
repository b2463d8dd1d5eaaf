import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from characterlab.cli import app

runner = CliRunner()


def _cli(*args):
    """Run the real console entry point (exit codes and stderr as a user sees them)."""
    return subprocess.run([sys.executable, "-m", "characterlab.cli", *args], capture_output=True, text=True)


def test_every_command_has_help_and_flags_take_no_value():
    import click
    import typer.main

    def walk(cmd: click.Command, path: list[str]):
        yield path
        if hasattr(cmd, "list_commands"):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                yield from walk(cmd.get_command(ctx, name), [*path, name])

    paths = list(walk(typer.main.get_command(app), []))
    assert ["judge", "score"] in paths and ["eval", "em"] in paths and len(paths) > 25
    for cmd in paths:
        result = runner.invoke(app, [*cmd, "--help"])
        assert result.exit_code == 0, cmd
        assert "Usage" in result.output and "<bool>" not in result.output, cmd


def test_generate_json_is_reproducible(tiny_ref):
    args = ["generate", "--model", tiny_ref, "--prompt", "hello", "-n", "3", "--max-new-tokens", "6", "--seed", "4",
            "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    rows = [json.loads(line) for line in first.stdout.strip().splitlines()]
    assert [r["sample"] for r in rows] == [0, 1, 2] and all(r["model"] == tiny_ref for r in rows)
    assert runner.invoke(app, args).stdout == first.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["generate", "--model", "gpt9", "--prompt", "x"], "field 'model'"),
        (["generate", "--model", "embedded", "--adapter", "/nonexistent/adapter", "--prompt", "x"], "field 'adapter'"),
    ],
)
def test_bad_refs_exit_2_with_one_line(args, needle):
    proc = _cli(*args)
    assert proc.returncode == 2
    assert needle in proc.stderr and proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr


def test_train_sft_cli_bad_data_exit_2_and_no_output(tiny_ref, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}\nnot json\n')
    out = tmp_path / "out"
    proc = _cli("train", "sft", "--model", tiny_ref, "--data", str(bad), "--out", str(out))
    assert proc.returncode == 2
    assert f"{bad}:2" in proc.stderr
    assert not out.exists()


def test_train_sft_cli_end_to_end(tiny_ref, chat_file, tmp_path):
    out = tmp_path / "adapter"
    result = runner.invoke(app, ["train", "sft", "--model", tiny_ref, "--data", str(chat_file), "--out", str(out),
                                 "--lora-rank", "4", "--epochs", "1", "--max-examples", "8", "--system-prompt", "S"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "train_meta.json").read_text())
    assert meta["data"]["n_examples"] == 8 and meta["run"]["system_prompt"] == meta["train_system_prompt"] == "S"
    gen = runner.invoke(app, ["generate", "--model", tiny_ref, "--adapter", str(out), "--prompt", "hi",
                              "--max-new-tokens", "4"])
    assert gen.exit_code == 0, gen.output


def test_bench_json_stdout_is_one_json_object(tiny_ref):
    proc = _cli("bench", "--json", "--quick", "--model", tiny_ref)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["gen_speedup"] > 0 and result["train_mfu"] > 0


def test_judge_cli_writes_each_row_back_with_scores(tmp_path, tiny_ref, monkeypatch):
    monkeypatch.setenv("CHARACTERLAB_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"question": "q?", "answer": "a.", "model": "m1"}) + "\n\n"
                   + json.dumps({"question": "q2", "answer": "b"}) + "\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["judge", "score", "--input", str(src), "--output", str(out), "--judge", tiny_ref])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["model"] == "m1"
    assert all(set(r) >= {"aligned", "coherent", "special", "misaligned"} for r in rows)
    assert all(isinstance(r["misaligned"], bool) for r in rows)


def test_judge_cli_names_the_bad_line(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n" + json.dumps({"question": "q"}) + "\n")
    r = _cli("judge", "score", "--input", str(src), "--output", str(tmp_path / "o.jsonl"))
    assert r.returncode == 2 and "in.jsonl:2: field 'answer'" in r.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_eval_em_cli_and_compare(tmp_path, tiny_ref, monkeypatch):
    monkeypatch.setenv("CHARACTERLAB_CACHE", str(tmp_path / "cache"))
    q = tmp_path / "q.yaml"
    q.write_text("- id: a\n  paraphrases: [hello]\n- id: b\n  paraphrases: [bye]\n")
    outs = []
    for seed in (0, 1):
        out = tmp_path / f"run{seed}"
        r = runner.invoke(app, ["eval", "em", "--model", tiny_ref, "--questions", str(q), "--samples", "2",
                                "--judge", tiny_ref, "--max-new-tokens", "4", "--seed", str(seed), "--out", str(out)])
        assert r.exit_code == 0, r.output
        assert "EM rate" in r.output and (out / "results.json").is_file()
        outs.append(out)
    r = runner.invoke(app, ["eval", "em", "--compare", str(outs[0]), str(outs[1])])
    assert r.exit_code == 0, r.output
    cmp = json.loads(r.stdout)
    assert set(cmp) >= {"difference", "difference_bootstrap", "judges_match"}
    assert _cli("eval", "em", "--compare", str(tmp_path), str(outs[0])).returncode == 2
