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


def test_every_command_has_help():
    for cmd in ([], ["generate"], ["train"], ["train", "sft"], ["bench"], ["demo"]):
        result = runner.invoke(app, [*cmd, "--help"])
        assert result.exit_code == 0, cmd
        assert "Usage" in result.output


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
    assert meta["data"]["n_examples"] == 8 and meta["config"]["system_prompt"] == "S"
    gen = runner.invoke(app, ["generate", "--model", tiny_ref, "--adapter", str(out), "--prompt", "hi",
                              "--max-new-tokens", "4"])
    assert gen.exit_code == 0, gen.output


def test_bench_json_stdout_is_one_json_object(tiny_ref):
    proc = _cli("bench", "--json", "--quick", "--model", tiny_ref)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["gen_speedup"] > 0 and result["train_mfu"] > 0
