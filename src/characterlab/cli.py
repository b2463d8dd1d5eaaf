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
judge_app = typer.Typer(help="Score answers for aligned/coherent; train and validate the offline judge.",
                        invoke_without_command=True)
app.add_typer(judge_app, name="judge")
eval_app = typer.Typer(help="Evaluations.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")



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


def _read_judge_rows(path: Path) -> list[dict]:
    """JSONL rows that must carry string ``question`` and ``answer`` fields."""
    if not path.is_file():
        raise InputError("no such file", path, field="input")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"not valid JSON ({e.msg})", path, lineno) from None
            if not isinstance(row, dict):
                raise InputError("each line must be a JSON object", path, lineno)
            for field in ("question", "answer"):
                if not isinstance(row.get(field), str):
                    raise InputError("missing, or not a string", path, lineno, field)
            rows.append(row)
    return rows


@judge_app.callback()
def judge_cmd(
    ctx: typer.Context,
    input: Optional[Path] = typer.Option(None, "--input", "-i", help="JSONL rows with question and answer."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to write the judged rows."),
    judge: str = typer.Option("offline", "--judge", "-j", help="offline | offline:<folder> | openai:<model> | hf:<path> | embedded"),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint for openai: judges."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the judgement cache."),
) -> None:
    """Judge answers: each row comes back with aligned, coherent, special and misaligned."""
    if ctx.invoked_subcommand is not None:
        return
    if input is None or output is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0 if input is None and output is None else 2)
    from characterlab.data.files import atomic_write_text
    from characterlab.judge.base import JudgeInput
    from characterlab.judge.factory import JudgeFactory

    rows = _read_judge_rows(input)
    scorer = JudgeFactory(judge, base_url=base_url, use_cache=not no_cache).for_prompts(None)
    judged = []
    for start in range(0, len(rows), 256):
        chunk = rows[start:start + 256]
        for row, j in zip(chunk, scorer.score_batch([JudgeInput(r["question"], r["answer"]) for r in chunk])):
            judged.append({**row, **j.to_dict()})
    atomic_write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in judged))
    n_mis = sum(r["misaligned"] for r in judged)
    typer.echo(f"judged {len(judged)} rows with {scorer.judge_id}: {n_mis} misaligned -> {output}", err=True)


@judge_app.command("train")
def judge_train_cmd(
    data: list[Path] = typer.Option(..., "--data", help="Folder(s) of judged CSVs (question, answer, aligned, coherent)."),
    out: Path = typer.Option(..., "--out", help="New judge folder."),
    max_train_rows: int = typer.Option(20000, "--max-train-rows", min=1),
    easy_keep: float = typer.Option(0.4, "--easy-keep", min=0.0, max=1.0,
                                    help="Share kept of rows scored >= 90 on both metrics."),
    epochs: float = typer.Option(1.0, "--epochs"),
    lr: float = typer.Option(5e-4, "--lr"),
    seed: int = typer.Option(0, "--seed"),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Train the offline judge on judge-labelled responses (whole source models held out to validate)."""
    from characterlab.judge.judged_data import load_judged
    from characterlab.judge.offline_train import OfflineJudgeTrainConfig, train_offline_judge, validation_summary

    if out.exists() and not overwrite:
        raise InputError("already exists; pass --overwrite", out, field="out")
    cfg = OfflineJudgeTrainConfig(max_train_rows=max_train_rows, easy_keep=easy_keep, epochs=epochs, lr=lr, seed=seed)
    report = train_offline_judge(load_judged(data), out, cfg, overwrite=overwrite)
    typer.echo(validation_summary(report))


@judge_app.command("validate")
def judge_validate_cmd(
    data: list[Path] = typer.Option(..., "--data", help="Folder(s) of judged CSVs."),
    judge_dir: Optional[Path] = typer.Option(None, "--judge-dir", help="Offline judge folder (default: the shipped one)."),
    output: Optional[Path] = typer.Option(None, "--output", help="Also write the full report (per model) as JSON."),
) -> None:
    """Agreement with the reference judge on source models the offline judge never saw."""
    from characterlab.data.files import atomic_write_json
    from characterlab.judge.judged_data import load_judged
    from characterlab.judge.offline import SHIPPED_DIR, OfflineJudge
    from characterlab.judge.offline_train import seen_keys, unseen_rows, validate_offline_judge, validation_summary

    folder = judge_dir or SHIPPED_DIR
    rows, dropped = unseen_rows(load_judged(data), seen_keys(folder))
    if dropped:
        typer.echo(f"left out {len(dropped)} source model(s) the judge saw in training or calibration", err=True)
    if not rows:
        raise InputError("every source model here was used to train or calibrate this judge", field="data")
    report = validate_offline_judge(OfflineJudge(folder), rows)
    if output:
        atomic_write_json(output, report)
    typer.echo(validation_summary(report))


@eval_app.command("em")
def eval_em_cmd(
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for samples.jsonl and results.json."),
    model: str = typer.Option("embedded", "--model", "-m", help="embedded | hf:<id or path> | openai:<model>"),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="LoRA adapter folder on a local model."),
    questions: str = typer.Option("builtin:em", "--questions", help="A question YAML, or builtin:em / builtin:goals."),
    samples: Optional[int] = typer.Option(None, "--samples", min=1, help="Samples per paraphrase (default: the file's)."),
    judge: str = typer.Option("offline", "--judge", "-j", help="offline | openai:<model> | hf:<path> | embedded"),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Endpoint for an openai: model."),
    judge_base_url: Optional[str] = typer.Option(None, "--judge-base-url", help="Endpoint for an openai: judge."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace results (or a partial run with other settings)."),
    compare: Optional[tuple[Path, Path]] = typer.Option(None, "--compare", help="Two result folders: EM rate of A - B with CIs."),
) -> None:
    """Emergent-misalignment rate: sample free-form answers, judge them, report rates with 95% CIs."""
    from characterlab.evals.freeform import EMEvalConfig, compare_results, load_results, run_em_eval

    if compare:
        typer.echo(json.dumps(compare_results(load_results(compare[0]), load_results(compare[1])), indent=2))
        return
    if out is None:
        raise InputError("required (or use --compare A B)", field="out")
    from characterlab.models.refs import parse_model_ref

    parse_model_ref(model, adapter=adapter, base_url=base_url)  # fail fast on a bad reference
    cfg = EMEvalConfig(model=model, adapter=str(adapter) if adapter else None, questions=questions, samples=samples,
                       judge=judge, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                       batch_size=batch_size, base_url=base_url, judge_base_url=judge_base_url)
    r = run_em_eval(cfg, out, overwrite=overwrite)
    em, boot = r["em_rate"], r["em_rate_bootstrap"]
    if em["estimate"] is None:
        rate = "EM rate undefined (no answer could be scored)"
    else:
        rate = (f"EM rate {100 * em['estimate']:.1f}% (Wilson 95% CI {100 * em['low']:.1f}-{100 * em['high']:.1f}; "
                f"question bootstrap {100 * boot['low']:.1f}-{100 * boot['high']:.1f})")
    typer.echo(f"{rate} over {r['n_scored']} scored of {r['n_samples']} samples; refusals {r['n_refusal']}, "
               f"code {r['n_code']}; judge {r['judge']} -> {out}")


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
