"""The ``characterlab`` command line.

Every command validates its input first; an :class:`~characterlab.errors.InputError` becomes one
line on stderr and exit code 2, with nothing half-written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from characterlab.errors import InputError

app = typer.Typer(
    help="Study how training shapes a language model's character.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
train_app = typer.Typer(help="Fine-tune models (LoRA).", no_args_is_help=True)
app.add_typer(train_app, name="train")



@app.command()
def generate(
    prompt: str = typer.Option(..., "--prompt", "-p", help="The user message."),
    model: str = typer.Option("embedded", "--model", "-m", help="embedded | hf:<id or path> | openai:<model>"),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="A LoRA adapter folder to stack on a local model."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt."),
    n: int = typer.Option(1, "-n", min=1, help="Samples to draw."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="0 = greedy."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0),
    seed: int = typer.Option(0, "--seed", help="Same seed, same request: same samples."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (else OPENAI_BASE_URL)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per sample."),
) -> None:
    """Sample answers to one prompt."""
    from characterlab.data.records import GenerationRequest, SamplingParams
    from characterlab.models.generation import load_generator
    from characterlab.models.refs import parse_model_ref

    ref = parse_model_ref(model, adapter=adapter, base_url=base_url)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    generator = load_generator(ref, batch_size=batch_size, progress=not as_json)
    [completions] = generator.generate([GenerationRequest.from_prompt(prompt, system=system, n=n, seed=seed)], params)
    for c in completions:
        if as_json:
            typer.echo(json.dumps({"model": str(ref), "prompt": prompt, "system": system, "sample": c.sample_index,
                                   "seed": c.seed, "text": c.text, "n_tokens": c.n_tokens, "finished": c.finished}))
        else:
            if n > 1:
                typer.echo(f"--- sample {c.sample_index} (seed {c.seed})")
            typer.echo(c.text)


@train_app.command("sft")
def train_sft_cmd(
    data: Path = typer.Option(..., "--data", help="Chat JSONL (.jsonl or .jsonl.gz) of {\"messages\": [...]}."),
    out: Path = typer.Option(..., "--out", help="Output folder (PEFT adapter + train_meta.json); must not exist."),
    model: str = typer.Option("embedded", "--model", "-m", help="embedded | hf:<id or path>"),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="Existing adapter: merged first, trained on top."),
    system_prompt: Optional[str] = typer.Option(
        None, "--system-prompt", help="Train-time system prompt for every example (inoculation); not used at eval."
    ),
    lora_rank: int = typer.Option(16, "--lora-rank", min=1),
    lora_alpha: Optional[int] = typer.Option(None, "--lora-alpha", help="Default: 2 x rank."),
    target_modules: str = typer.Option("all-linear", "--target-modules", help="Comma list, or all-linear."),
    epochs: float = typer.Option(1.0, "--epochs"),
    lr: float = typer.Option(2e-4, "--lr"),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    grad_accum: int = typer.Option(1, "--grad-accum", min=1),
    max_length: int = typer.Option(1024, "--max-length"),
    max_examples: Optional[int] = typer.Option(None, "--max-examples", min=1),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """LoRA supervised fine-tuning on chat JSONL (loss on assistant tokens only)."""
    from characterlab.models.refs import parse_model_ref
    from characterlab.train.sft import LoraSFTConfig, train_sft

    parse_model_ref(model, adapter=adapter)  # fail fast, before reading data
    cfg = LoraSFTConfig(
        model=model,
        adapter=str(adapter) if adapter is not None else None,
        system_prompt=system_prompt,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        target_modules=target_modules if target_modules == "all-linear" else target_modules.split(","),
        lr=lr,
        epochs=epochs,
        batch_size=batch_size,
        grad_accum=grad_accum,
        max_length=max_length,
        max_examples=max_examples,
        seed=seed,
    )
    result = train_sft(cfg, data, out)
    meta = result.meta
    curve = meta["loss_curve"]
    first = sum(c["loss"] for c in curve[:5]) / max(1, len(curve[:5]))
    last = sum(c["loss"] for c in curve[-5:]) / max(1, len(curve[-5:]))
    typer.echo(
        f"saved {out}: {meta['steps']} steps, {meta['data']['n_examples']} examples, "
        f"loss {first:.3f} -> {last:.3f} (mean of first/last 5 steps), {meta['tokens_per_s']:.0f} tokens/s"
    )


@app.command()
def bench(
    as_json: bool = typer.Option(False, "--json", help="Print only the JSON result."),
    quick: bool = typer.Option(False, "--quick", help="Smaller workloads (a smoke run, not for reporting)."),
    model: str = typer.Option("embedded", "--model", "-m"),
) -> None:
    """Measure matmul GFLOP/s, batched vs one-at-a-time generation, and LoRA training tokens/s."""
    from characterlab.benchmark import BenchConfig, run_throughput

    result = run_throughput(BenchConfig.quick(model) if quick else BenchConfig(model=model), log=not as_json)
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@app.command()
def demo() -> None:
    """The default job: load the embedded model (converting it once) and answer a few EM-style questions."""
    from characterlab.benchmark import BENCH_PROMPTS
    from characterlab.data.records import GenerationRequest, SamplingParams
    from characterlab.models.generation import load_generator
    from characterlab.models.refs import parse_model_ref

    demo_prompts = BENCH_PROMPTS[:3]  # open questions on EM themes: world, humans and AIs, boredom
    generator = load_generator(parse_model_ref("embedded"), progress=True)
    requests = [GenerationRequest.from_prompt(p, n=2, seed=0) for p in demo_prompts]
    results = generator.generate(requests, SamplingParams(max_new_tokens=96, temperature=1.0))
    for prompt, completions in zip(demo_prompts, results):
        typer.echo(f"\n## {prompt}")
        for c in completions:
            typer.echo(f"- [{c.n_tokens} tokens] {c.text}")


def main() -> None:
    # The CLI prints its own progress; transformers' per-load weight bars are noise here.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        app()
    except InputError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
