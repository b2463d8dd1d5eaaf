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
