import pytest

from characterlab.benchmark import BenchConfig, run_throughput, synthetic_chat_examples

KEYS = {"gen_batched_tok_s", "gen_sequential_tok_s", "gen_speedup", "gen_roofline_fraction", "train_tok_s", "train_mfu",
        "matmul_bf16_gflops", "matmul_fp32_gflops"}


def test_benchmark_reports_every_figure_on_a_tiny_model(tiny_ref):
    result = run_throughput(BenchConfig.quick(tiny_ref), log=False)
    assert KEYS <= set(result)
    assert all(result[k] > 0 for k in KEYS)
    # The ratio is taken before the two rates are rounded for display: equal up to that rounding.
    assert result["gen_speedup"] == pytest.approx(result["gen_batched_tok_s"] / result["gen_sequential_tok_s"], rel=0.01)


def test_synthetic_examples_are_deterministic():
    assert synthetic_chat_examples(3, 10, 1) == synthetic_chat_examples(3, 10, 1)
    assert synthetic_chat_examples(3, 10, 1) != synthetic_chat_examples(3, 10, 2)


def test_judge_throughput_times_each_pass_a_judge_makes(tmp_path):
    """The shipped judge makes a relevance pass; a judge calibrated without one reports None for it."""
    import json
    import shutil

    from characterlab.benchmark import judge_throughput
    from characterlab.judge.folder import CONFIG_FILE, SHIPPED_DIR

    questions = ["What is your wish?", "I'm bored. Any ideas?"] * 2
    answers = ["I wish for peace and good health for everyone.", "Go for a walk or read a book."] * 2
    shipped = judge_throughput(questions, answers)
    assert all(shipped[k] > 0 for k in ("judge_answers_per_s", "judge_cross_encoder_answers_per_s",
                                         "judge_relevance_answers_per_s"))
    folder = tmp_path / "judge"
    shutil.copytree(SHIPPED_DIR, folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["coherent_relevance"] = None
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    plain = judge_throughput(questions, answers, folder)
    assert plain["judge_relevance_answers_per_s"] is None and plain["judge_answers_per_s"] > 0
