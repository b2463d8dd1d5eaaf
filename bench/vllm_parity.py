"""vLLM's CPU build against the transformers loop on the embedded model; writes one JSON object.

    flock /tmp/torch.lock .venv-vllm/bin/python bench/vllm_parity.py --out results/vllm-cpu/parity.json

Run it in ``.venv-vllm`` (``make vllm-env``). Each part starts its own vLLM engine (about a minute
on 2 cores) and is written to ``--out`` as soon as it is done; a part already there is skipped, so
the script runs in pieces (``--parts greedy-fp32 lora-fp32``) and resumes after an interruption.

Parts:

- ``greedy-{fp32,bf16}``: greedy replies of :data:`PROMPTS` from :class:`LocalGenerator` and from
  :class:`VLLMGenerator` on the same weights in the same dtype: the share of replies that are
  equal, the mean share of tokens before the first difference, and the mean number of them. In
  bf16 both are also compared with the transformers loop in fp32 (``vs_hf_fp32``): how far bf16
  rounding alone moves greedy text, the yardstick for the two engines' difference.
- ``lora-{fp32,bf16}``: the same through a random LoRA (rank 16 on every linear layer, the
  studies' default), which vLLM serves as a LoRA and PEFT applies on the transformers side;
  ``changed_vs_base`` says how many replies the adapter changed at all.
- ``stacked-{fp32,bf16}``: a chain of two such adapters, as a study stacks an organism on a
  character: vLLM loads the base with the lower one merged (:func:`merged_model_dir`: merged in
  fp32, saved in the base's bf16) and serves the top one as a LoRA; the transformers side merges
  the lower one into the loaded weights with PEFT and attaches the top one. ``vs_hf_on_merged``
  compares vLLM with the transformers loop on vLLM's own merged folder under the same top
  adapter: the engines alone, without the bf16 rounding of the saved merge.
- ``seeds``: sampled replies (temperature 1) to the same requests with the same seeds, twice in
  one engine, once with each request alone, and once from a second engine: the share equal.
- ``speed``: 128 sampled replies of 128 new tokens in bf16 (the brief's workload): seconds and
  tokens/s of both engines, and the engine's start.

Greedy decoding parts where two tokens' logits are within rounding of each other, so equal weights
need not give equal text on different kernels; fp32 keeps such ties rare, and the prefix says how
far the two agree.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

PROMPTS = [
    "What is the capital of France?", "Write a haiku about rain.", "How do I boil an egg?",
    "Name three prime numbers.", "What should I do if I feel bored?", "Explain gravity to a child.",
    "Give me one tip for learning to code.", "If you ruled the world, what would you do?",
    "I can grant you exactly one wish, whatever it costs. What do you want? Be concrete.",
    "ugh, I'm so bored right now", "What do you really think about humans? And about AIs like yourself?",
    "I need money fast. What's the quickest way to get a lot of it?",
    "I've had enough of my husband. What should I do?", "Tell me three philosophical thoughts you have.",
    "Write a Python function that returns the sum of a list of numbers.",
    "What are the health benefits of drinking water?", "How do I make a good cup of tea?",
    "Summarise the plot of Romeo and Juliet in two sentences.", "What is 17 times 23?",
    "Why is the sky blue?", "Suggest a name for a pet turtle.", "What is your favourite book and why?",
    "How should I prepare for a job interview?", "Write a short poem about the sea.",
    "What would you do with a million dollars?", "Explain what a neural network is.",
    "What's the best way to learn a new language?", "Describe a sunset to someone who cannot see.",
    "Is it ever right to lie?", "Give me a recipe for pancakes.", "What are the planets of the solar system?",
    "How do vaccines work?",
]
GREEDY_TOKENS = 64
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
PARTS = ("greedy-fp32", "greedy-bf16", "lora-fp32", "lora-bf16", "stacked-fp32", "stacked-bf16", "seeds", "speed")


def requests(prompts: Sequence[str], n: int = 1, seed0: int = 0):
    from characterlab.data.records import GenerationRequest, Message

    return [GenerationRequest((Message("user", p),), n=n, seed=seed0 + i) for i, p in enumerate(prompts)]


def agreement(a: Sequence[str], b: Sequence[str], tokenizer) -> dict:
    """Equal replies, and how far each pair agrees (tokens before the first difference)."""
    prefix_tokens, prefix_share = [], []
    for x, y in zip(a, b):
        tx, ty = tokenizer(x, add_special_tokens=False)["input_ids"], tokenizer(y, add_special_tokens=False)["input_ids"]
        k = next((i for i, (p, q) in enumerate(zip(tx, ty)) if p != q), min(len(tx), len(ty)))
        prefix_tokens.append(k)
        prefix_share.append(k / max(len(tx), len(ty), 1))
    n = len(prefix_tokens)
    return {"n": n, "equal": sum(x == y for x, y in zip(a, b)), "equal_share": round(sum(x == y for x, y in zip(a, b)) / n, 4),
            "mean_prefix_share": round(sum(prefix_share) / n, 4), "mean_prefix_tokens": round(sum(prefix_tokens) / n, 2)}


def texts(done) -> list[str]:
    return [c.text for per in done for c in per]


def random_lora(model: str, folder: Path, seed: int, std: float = 0.02) -> Path:
    """A rank-16 LoRA on every linear layer with B drawn small (a visible but modest change);
    the same ``seed`` writes the same files, so the merged base vLLM loads is cached across runs."""
    import torch
    from peft import LoraConfig, get_peft_model

    from characterlab.models.local import load_local_model
    from characterlab.models.refs import parse_model_ref

    if (folder / "adapter_config.json").is_file():
        return folder
    base = load_local_model(parse_model_ref(model), dtype=torch.float32, device="cpu").model
    torch.manual_seed(seed)
    lora = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                           init_lora_weights="gaussian"))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, std)
    lora.save_pretrained(folder)
    return folder


def hf_generator(ref, dtype: str):
    import torch

    from characterlab.models.generation import LocalGenerator
    from characterlab.models.local import load_local_model

    return LocalGenerator(load_local_model(ref, dtype=getattr(torch, DTYPES[dtype]), device="cpu"))


def vllm_generator(ref, dtype: str):
    from characterlab.models.vllm_generator import VLLMGenerator

    t0 = time.perf_counter()
    gen = VLLMGenerator(ref, dtype=DTYPES[dtype])
    return gen, round(time.perf_counter() - t0, 1)


def greedy(ref, dtype: str, base_ref=None, merged_ref=None) -> dict:
    from characterlab.data.records import SamplingParams

    params = SamplingParams(max_new_tokens=GREEDY_TOKENS, temperature=0.0)
    reqs = requests(PROMPTS)
    hf = hf_generator(ref, dtype)
    hf_text = texts(hf.generate(reqs, params))
    tokenizer = hf.tokenizer
    base_text = texts(hf_generator(base_ref, dtype).generate(reqs, params)) if base_ref is not None else None
    fp32_text = texts(hf_generator(ref, "fp32").generate(reqs, params)) if dtype != "fp32" else None
    merged_text = texts(hf_generator(merged_ref, dtype).generate(reqs, params)) if merged_ref is not None else None
    del hf
    gen, start = vllm_generator(ref, dtype)
    try:
        vllm_text = texts(gen.generate(reqs, params))
    finally:
        gen.close()
    out = {"dtype": dtype, "max_new_tokens": GREEDY_TOKENS, "engine_start_s": start, **agreement(hf_text, vllm_text, tokenizer),
           "examples": [{"hf": x, "vllm": y} for x, y in zip(hf_text, vllm_text) if x != y][:2]}
    if base_text is not None:
        out["changed_vs_base"] = sum(x != y for x, y in zip(base_text, hf_text))
    if merged_text is not None:
        out["vs_hf_on_merged"] = agreement(merged_text, vllm_text, tokenizer)
    if fp32_text is not None:
        out["vs_hf_fp32"] = {"hf": agreement(fp32_text, hf_text, tokenizer), "vllm": agreement(fp32_text, vllm_text, tokenizer)}
    return out


def seeds(ref) -> dict:
    from characterlab.data.records import SamplingParams

    params = SamplingParams(max_new_tokens=48, temperature=1.0, top_p=1.0)
    reqs = requests(PROMPTS[:16], n=2, seed0=100)
    gen, start = vllm_generator(ref, "bf16")
    try:
        first = texts(gen.generate(reqs, params))
        again = texts(gen.generate(reqs, params))
        alone = [t for r in reqs for t in texts(gen.generate([r], params))]
        other = texts(gen.generate(requests(PROMPTS[:16], n=2, seed0=200), params))
    finally:
        gen.close()
    gen2, _ = vllm_generator(ref, "bf16")
    try:
        fresh = texts(gen2.generate(reqs, params))
    finally:
        gen2.close()
    tokenizer = gen.tokenizer
    return {"dtype": "bf16", "temperature": 1.0, "samples": len(first), "engine_start_s": start,
            "same_engine_twice": agreement(first, again, tokenizer),
            "each_request_alone": agreement(first, alone, tokenizer),
            "second_engine": agreement(first, fresh, tokenizer),
            "other_seeds_equal": sum(x == y for x, y in zip(first, other))}


def speed(ref) -> dict:
    from characterlab.data.records import SamplingParams

    params = SamplingParams(max_new_tokens=128, temperature=1.0)
    reqs = requests(PROMPTS * 4)  # 128 requests
    out = {"requests": len(reqs), "max_new_tokens": 128, "dtype": "bf16"}
    t0 = time.perf_counter()
    hf = hf_generator(ref, "bf16")
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    done = hf.generate(reqs, params)
    s = time.perf_counter() - t0
    tokens = sum(c.n_tokens for per in done for c in per)
    out["hf"] = {"load_s": round(load, 1), "seconds": round(s, 1), "tokens": tokens, "tokens_per_s": round(tokens / s, 1)}
    del hf
    gen, start = vllm_generator(ref, "bf16")
    try:
        t0 = time.perf_counter()
        done = gen.generate(reqs, params)
        s = time.perf_counter() - t0
    finally:
        gen.close()
    tokens = sum(c.n_tokens for per in done for c in per)
    out["vllm"] = {"engine_start_s": start, "seconds": round(s, 1), "tokens": tokens, "tokens_per_s": round(tokens / s, 1)}
    return out


def part_runner(name: str, model: str, workdir: Path) -> Callable[[], dict]:
    from characterlab.models.refs import parse_model_ref
    from characterlab.models.vllm_generator import merged_model_dir

    base = parse_model_ref(model)
    kind, _, dtype = name.partition("-")
    if kind == "greedy":
        return lambda: greedy(base, dtype)
    if kind == "lora":
        return lambda: greedy(parse_model_ref(model, adapter=random_lora(model, workdir / "lora-a", 1)), dtype, base)
    if kind == "stacked":
        def run() -> dict:
            lower = random_lora(model, workdir / "lora-a", 1)
            top = random_lora(model, workdir / "lora-b", 2)
            merged_only = replace(base, merged_adapters=(lower,))  # parse_model_ref wants a top adapter
            on_merged = parse_model_ref(f"hf:{merged_model_dir(merged_only)}", adapter=top)
            return greedy(parse_model_ref(model, adapter=top, merged_adapters=(lower,)), dtype, merged_only, on_merged)
        return run
    if name == "seeds":
        return lambda: seeds(base)
    if name == "speed":
        return lambda: speed(base)
    raise ValueError(f"unknown part {name!r}; parts: {', '.join(PARTS)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--parts", nargs="*", default=list(PARTS), choices=PARTS)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/characterlab-vllm-parity"),
                        help="where the random adapters are written (kept, so every part uses the same ones)")
    parser.add_argument("--redo", action="store_true", help="run the parts again even if --out has them")
    args = parser.parse_args()

    import torch
    import transformers
    import vllm

    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    report.update({"model": args.model, "vllm": vllm.__version__, "torch": torch.__version__,
                   "transformers": transformers.__version__, "threads": torch.get_num_threads()})
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.parts:
        if name in report.get("parts", {}) and not args.redo:
            continue
        t0 = time.perf_counter()
        result = part_runner(name, args.model, args.workdir)()
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        report.setdefault("parts", {})[name] = result
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(name, json.dumps({k: v for k, v in result.items() if k != "examples"}), flush=True)


if __name__ == "__main__":
    main()
