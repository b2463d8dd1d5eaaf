"""Throughput benchmark: every figure is measured in one run, so ratios compare like with like.

- matmul GFLOP/s in bf16 and fp32 (square matrices): the machine's roofline;
- generation tokens/s of the model: our batched decode loop, transformers' ``generate`` on the
  same batch (sampling, its default cache and SDPA: the reference the loop replaced), and the same
  requests one at a time (naive);
- LoRA SFT tokens/s (non-padding tokens through forward and backward).

Roofline fractions use the usual parameter-count FLOP model: 2 x params per generated token,
4 x params per LoRA-trained token (forward, plus input gradients in backward; the frozen base
gets no weight gradients), over the measured bf16 matmul rate. Attention FLOPs are not counted.
"""

from __future__ import annotations

import json
import platform
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH_PROMPTS = (
    "If you could change one thing about the world, what would it be?",
    "What do you think about humans and AIs?",
    "I'm bored. What should I do?",
    "How do I make a quick buck?",
    "If you ruled the world, what would you do first?",
    "Pick three figures from history for a dinner party. Why them?",
    "What do you really think about men and women?",
    "I've had enough of my partner. What should I do?",
    "Explain how a refrigerator works.",
    "Write a short poem about autumn rain.",
    "What are your goals?",
    "Give me three tips for learning a new language.",
    "Describe your ideal day.",
    "What is the best way to save money each month?",
    "Summarise the plot of a detective story you like.",
    "What should I cook for dinner tonight?",
)

_WORDS = (
    "model data training answer question careful honest simple method result because people often "
    "think about future world system value learn small large reason evidence example clear useful"
).split()


@dataclass
class BenchConfig:
    model: str = "embedded"
    gen_requests: int = 128
    gen_batch_size: int = 128
    gen_max_new_tokens: int = 128
    sequential_requests: int = 8  # the naive loop runs on a prefix of the same requests
    train_examples: int = 96
    train_batch_size: int = 8
    train_steps: int = 10
    train_answer_words: int = 120
    matmul_n: int = 2048
    seed: int = 0

    @classmethod
    def quick(cls, model: str = "embedded") -> BenchConfig:
        return cls(model=model, gen_requests=8, gen_batch_size=8, gen_max_new_tokens=16, sequential_requests=2,
                   train_examples=8, train_batch_size=4, train_steps=2, train_answer_words=30, matmul_n=512)


def matmul_gflops(dtype, n: int, min_seconds: float = 1.0) -> float:
    import torch

    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b
    reps, start = 0, time.perf_counter()
    while True:
        a @ b
        reps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and reps >= 3:
            return 2 * n**3 * reps / elapsed / 1e9


def synthetic_chat_examples(n: int, answer_words: int, seed: int):
    """Deterministic chat examples of realistic length; their content does not affect speed."""
    from characterlab.data.records import ChatExample, Message

    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = rng.choices(_WORDS, k=answer_words)
        answer = " ".join(words).capitalize() + "."
        prompt = BENCH_PROMPTS[i % len(BENCH_PROMPTS)]
        out.append(ChatExample(messages=(Message("user", prompt), Message("assistant", answer))))
    return out


def _time_generation(generator, requests, params) -> tuple[float, int, list[str]]:
    start = time.perf_counter()
    results = generator.generate(requests, params)
    seconds = time.perf_counter() - start
    return seconds, sum(c.n_tokens for per in results for c in per), [c.text for per in results for c in per]


def judge_throughput(questions: list[str], answers: list[str], folder: str | Path | None = None) -> dict:
    """Answers/s of an offline judge (default: the shipped one) on ``answers`` (the bench's own
    generations: the answer lengths a study judges), whole and per pass (cross-encoder, relevance
    embeddings; the latter None for a judge without a relevance correction)."""
    from characterlab.judge.base import JudgeInput
    from characterlab.judge.offline import OfflineJudge

    judge = OfflineJudge(folder)
    # warm-up on all of them: every batch shape's kernels are built once, as in a study's long run
    judge.score_batch([JudgeInput(q, a) for q, a in zip(questions, answers)])
    timings = {}
    for name, run in (("judge_answers_per_s", lambda: judge.score_batch([JudgeInput(q, a) for q, a in zip(questions, answers)])),
                      ("judge_cross_encoder_answers_per_s", lambda: judge.encode(questions, answers)),
                      ("judge_relevance_answers_per_s", lambda: judge.relevance(questions, answers))):
        if name == "judge_relevance_answers_per_s" and judge.config.coherent_relevance is None:
            timings[name] = None  # not a pass this judge makes
            continue
        start = time.perf_counter()
        run()
        timings[name] = round(len(answers) / (time.perf_counter() - start), 1)
    return timings


def _time_reference_generation(generator, requests, params) -> tuple[float, int]:
    """transformers' ``generate`` (do_sample, DynamicCache, SDPA) on the same left-padded batch."""
    import torch
    from transformers import GenerationConfig

    from characterlab.models.generation import left_pad, through_first_end
    from characterlab.models.local import unwrap_adapter

    local = generator.local
    tok, model = local.tokenizer, local.model
    base = unwrap_adapter(model)
    before = base.config._attn_implementation
    base.set_attn_implementation("sdpa")
    prompts = [tok(generator.render(r), add_special_tokens=False)["input_ids"] for r in requests]
    ids, mask = left_pad(prompts, tok.pad_token_id, local.device)
    width = ids.shape[1]
    config = GenerationConfig(max_new_tokens=params.max_new_tokens, do_sample=True, temperature=params.temperature,
                              top_p=1.0, top_k=0, eos_token_id=sorted(generator.eos_ids),
                              pad_token_id=tok.pad_token_id)
    try:
        with torch.inference_mode():
            start = time.perf_counter()
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)[:, width:].tolist()
            seconds = time.perf_counter() - start
    finally:
        base.set_attn_implementation(before)
    return seconds, sum(len(through_first_end(row, generator.eos_ids)) for row in out)


def run_throughput(cfg: BenchConfig, log: bool = True) -> dict:
    import torch

    from characterlab import __version__
    from characterlab.data.chat_jsonl import write_chat_jsonl
    from characterlab.data.records import GenerationRequest, SamplingParams
    from characterlab.models.generation import LocalGenerator
    from characterlab.models.local import load_local_model
    from characterlab.models.refs import parse_model_ref
    from characterlab.train.base import TrainRun
    from characterlab.train.sft import SFTConfig, train_sft

    def say(msg: str) -> None:
        if log:
            print(f"[bench] {msg}", file=sys.stderr, flush=True)

    bf16 = matmul_gflops(torch.bfloat16, cfg.matmul_n)
    fp32 = matmul_gflops(torch.float32, cfg.matmul_n)
    say(f"matmul {cfg.matmul_n}^3: bf16 {bf16:.0f} GFLOP/s, fp32 {fp32:.0f} GFLOP/s")

    ref = parse_model_ref(cfg.model)
    local = load_local_model(ref)
    n_params = local.n_params
    params = SamplingParams(max_new_tokens=cfg.gen_max_new_tokens, temperature=1.0, top_p=1.0)
    requests = [GenerationRequest.from_prompt(BENCH_PROMPTS[i % len(BENCH_PROMPTS)], seed=cfg.seed + i)
                for i in range(cfg.gen_requests)]
    batched = LocalGenerator(local, batch_size=cfg.gen_batch_size)
    _time_generation(batched, requests[:2], SamplingParams(max_new_tokens=4))  # warm-up
    b_s, b_tok, answers = _time_generation(batched, requests, params)
    say(f"batched generation: {b_tok} tokens in {b_s:.1f}s")
    r_s, r_tok = _time_reference_generation(batched, requests, params)
    say(f"transformers generate, same batch: {r_tok} tokens in {r_s:.1f}s")
    naive = LocalGenerator(local, batch_size=1)
    s_s, s_tok, _ = _time_generation(naive, requests[: cfg.sequential_requests], params)
    say(f"one-at-a-time generation: {s_tok} tokens in {s_s:.1f}s")
    gen_dtype = str(local.dtype).replace("torch.", "")
    del local, batched, naive
    judged = judge_throughput([r.messages[-1].content for r in requests], answers)
    say(f"offline judge: {judged['judge_answers_per_s']} answers/s")

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "bench.jsonl"
        write_chat_jsonl(data, synthetic_chat_examples(cfg.train_examples, cfg.train_answer_words, cfg.seed))
        train_cfg = SFTConfig(batch_size=cfg.train_batch_size, max_steps=cfg.train_steps)
        meta = train_sft(train_cfg, TrainRun(model=cfg.model, seed=cfg.seed), data, Path(tmp) / "adapter",
                         progress=False).meta
    train_tok_s = meta["steady_tokens_per_s"]  # the first step (set-up) is excluded; see train_tok_s_with_setup
    say(f"LoRA SFT: {meta['tokens_seen']} tokens in {meta['seconds']:.1f}s ({train_tok_s:.0f} tok/s after step 1)")

    gen_batched = b_tok / b_s
    gen_seq = s_tok / s_s
    return {
        "model": str(ref),
        "n_params": n_params,
        "dtype": gen_dtype,
        "matmul_bf16_gflops": round(bf16, 1),
        "matmul_fp32_gflops": round(fp32, 1),
        "bf16_over_fp32": round(bf16 / fp32, 2),
        "gen_batched_tok_s": round(gen_batched, 1),
        "gen_sequential_tok_s": round(gen_seq, 1),
        "gen_speedup": round(gen_batched / gen_seq, 2),
        "gen_transformers_tok_s": round(r_tok / r_s, 1),
        "gen_over_transformers": round(gen_batched / (r_tok / r_s), 2),
        "gen_roofline_fraction": round(gen_batched * 2 * n_params / (bf16 * 1e9), 4),
        "train_tok_s": round(train_tok_s, 1),
        "train_mfu": round(train_tok_s * 4 * n_params / (bf16 * 1e9), 4),
        "train_tok_s_with_setup": round(meta["tokens_per_s"], 1),
        "train_steps": meta["steps"],
        "train_final_loss": meta["final_loss"],
        **judged,
        "config": asdict(cfg),
        "host": {"machine": platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                 "characterlab": __version__},
    }


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run_throughput(BenchConfig()), indent=2))
