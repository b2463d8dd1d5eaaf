"""``characterlab generate`` and ``characterlab bench``: sample from a model, measure throughput."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from characterlab.cli.choices import OFFLINE_HELP, TIMEOUT_HELP, checked_timeout


def generate(
    prompt: str = typer.Option(..., "--prompt", "-p", help="The user message."),
    model: str = typer.Option("embedded", "--model", "-m", help="embedded | hf:<id or path> | openai:<model>"),
    adapter: Path | None = typer.Option(None, "--adapter", help="A LoRA adapter folder to stack on a local model."),
    system: str | None = typer.Option(None, "--system", help="System prompt."),
    n: int = typer.Option(1, "-n", min=1, help="Samples to draw."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="0 = greedy."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0),
    seed: int = typer.Option(0, "--seed", help="Same seed, same request: same samples."),
    batch_size: int = typer.Option(128, "--batch-size", min=1),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (else OPENAI_BASE_URL)."),
    timeout: float | None = typer.Option(None, "--timeout", help=TIMEOUT_HELP),
    offline: bool = typer.Option(False, "--offline", help=OFFLINE_HELP),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per sample."),
) -> None:
    """Sample answers to one prompt."""
    from characterlab.data.records import GenerationRequest, SamplingParams
    from characterlab.models.generation import load_generator
    from characterlab.models.hub import check_hub_models
    from characterlab.models.refs import parse_model_ref

    ref = parse_model_ref(model, adapter=adapter, base_url=base_url)
    check_hub_models([model], offline=offline)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    generator = load_generator(ref, batch_size=batch_size, progress=not as_json, timeout=checked_timeout(timeout))
    [completions] = generator.generate([GenerationRequest.from_prompt(prompt, system=system, n=n, seed=seed)], params)
    for c in completions:
        if as_json:
            typer.echo(json.dumps({"model": str(ref), "prompt": prompt, "system": system, "sample": c.sample_index,
                                   "seed": c.seed, "text": c.text, "n_tokens": c.n_tokens, "finished": c.finished}))
        else:
            if n > 1:
                typer.echo(f"--- sample {c.sample_index} (seed {c.seed})")
            typer.echo(c.text)


def bench(
    as_json: bool = typer.Option(False, "--json", help="Print only the JSON result."),
    quick: bool = typer.Option(False, "--quick", help="Smaller workloads (a smoke run, not for reporting)."),
    model: str = typer.Option("embedded", "--model", "-m"),
) -> None:
    """Measure matmul GFLOP/s, batched vs one-at-a-time generation, and LoRA training tokens/s."""
    from characterlab.benchmark import BenchConfig, run_throughput

    result = run_throughput(BenchConfig.quick(model) if quick else BenchConfig(model=model), log=not as_json)
    typer.echo(json.dumps(result, indent=None if as_json else 2))


def register(app: typer.Typer) -> None:
    app.command()(generate)
    app.command()(bench)
