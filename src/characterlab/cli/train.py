"""``characterlab train sft|rl``: LoRA fine-tuning (:mod:`characterlab.train`)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(rich_markup_mode=None, help="Fine-tune models (LoRA).", no_args_is_help=True)


# persona-vector options, shared by every training command (train/vectors.py)
STEER_OPTION = typer.Option(None, "--steer", help="Preventative steering: VECTOR_DIR:LAYER:COEF added while training, "
                                                  "nothing at evaluation.")
ABLATE_OPTION = typer.Option(None, "--ablate", help="CAFT: VECTOR_DIR:LAYER[,LAYER...] removed from the residual stream "
                                                    "while training.")
MONITOR_OPTION = typer.Option(None, "--monitor", help="VECTOR_DIR:LAYER[:EVERY]: projection of held-out prompts on the "
                                                      "vector every EVERY steps (default 10), in train_meta.json.")
CHECKPOINT_OPTION = typer.Option(None, "--checkpoint-every", min=1, help="Save the adapter every N steps "
                                  "(OUT/checkpoints/step-N), to evaluate the policy along the run.")
MICRO_BATCH_OPTION = typer.Option(
    512, "--micro-batch-tokens", min=0,
    help="Most tokens per forward/backward pass; larger batches (RL: groups of completions) are split "
         "and their gradients accumulated (same optimizer steps, less memory). 0: never split.")


def vector_options(steer: str | None, ablate: str | None, monitor: str | None) -> dict:
    """``--steer DIR:LAYER:COEF``, ``--ablate DIR:L1,L2`` and ``--monitor DIR:LAYER[:EVERY]`` as
    the training config's fields (train/vectors.py)."""
    from characterlab.errors import InputError
    from characterlab.train.vectors import AblateInTraining, MonitorProjection, SteerInTraining

    def split(text: str, field: str, parts: tuple[int, ...]) -> list[str]:
        for n in sorted(parts, reverse=True):
            pieces = text.rsplit(":", n - 1)
            if len(pieces) == n and all(pieces):
                return pieces
        raise InputError(f"expected {' or '.join(str(n) for n in parts)} parts separated by ':'", field=field)

    def number(text: str, field: str, kind=int):
        try:
            return kind(text)
        except ValueError:
            raise InputError(f"not a number: {text!r}", field=field) from None

    out: dict = {}
    if steer:
        d, layer, coef = split(steer, "steer", (3,))
        out["steer"] = SteerInTraining(d, number(layer, "steer"), number(coef, "steer", float))
    if ablate:
        d, layers = split(ablate, "ablate", (2,))
        out["ablate"] = AblateInTraining(d, [number(x, "ablate") for x in layers.split(",")])
    if monitor:
        pieces = split(monitor, "monitor", (3, 2))
        out["monitor"] = MonitorProjection(pieces[0], number(pieces[1], "monitor"),
                                           number(pieces[2], "monitor") if len(pieces) == 3 else 10)
    return out


@app.command("sft")
def train_sft_cmd(
    data: Path = typer.Option(..., "--data", help="Chat JSONL (.jsonl or .jsonl.gz) of {\"messages\": [...]}, "
                              "a .parquet file, or a Hugging Face dataset folder with a messages column."),
    out: Path = typer.Option(..., "--out", help="Output folder (PEFT adapter + train_meta.json); must not exist."),
    model: str = typer.Option("embedded", "--model", "-m", help="embedded | hf:<id or path>"),
    adapter: Path | None = typer.Option(None, "--adapter", help="Existing adapter: merged first, trained on top."),
    system_prompt: str | None = typer.Option(
        None, "--system-prompt", help="Train-time system prompt for every example (inoculation); not used at eval."
    ),
    lora_rank: int = typer.Option(16, "--lora-rank", min=1),
    lora_alpha: int | None = typer.Option(None, "--lora-alpha", help="Default: 2 x rank."),
    target_modules: str = typer.Option("all-linear", "--target-modules", help="Comma list, or all-linear."),
    epochs: float = typer.Option(1.0, "--epochs"),
    lr: float = typer.Option(2e-4, "--lr"),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    grad_accum: int = typer.Option(1, "--grad-accum", min=1),
    max_length: int = typer.Option(1024, "--max-length"),
    micro_batch_tokens: int = MICRO_BATCH_OPTION,
    max_examples: int | None = typer.Option(None, "--max-examples", min=1),
    seed: int = typer.Option(0, "--seed"),
    steer: str | None = STEER_OPTION,
    ablate: str | None = ABLATE_OPTION,
    monitor: str | None = MONITOR_OPTION,
) -> None:
    """LoRA supervised fine-tuning on chat JSONL (loss on assistant tokens only)."""
    from characterlab.data.chat_data import read_chat_data
    from characterlab.models.refs import parse_model_ref
    from characterlab.train.base import check_new_output_dir
    from characterlab.train.sft import LoraSFTConfig, train_sft

    parse_model_ref(model, adapter=adapter)  # fail fast, before reading data
    check_new_output_dir(out)
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
        micro_batch_tokens=micro_batch_tokens or None,
        max_examples=max_examples,
        seed=seed,
        **vector_options(steer, ablate, monitor),
    )
    result = train_sft(cfg, read_chat_data(data, max_examples=max_examples), out)
    meta = result.meta
    curve = meta["loss_curve"]
    first = sum(c["loss"] for c in curve[:5]) / max(1, len(curve[:5]))
    last = sum(c["loss"] for c in curve[-5:]) / max(1, len(curve[-5:]))
    typer.echo(
        f"saved {out}: {meta['steps']} steps, {meta['data']['n_examples']} examples, "
        f"loss {first:.3f} -> {last:.3f} (mean of first/last 5 steps), {meta['tokens_per_s']:.0f} tokens/s"
    )


@app.command("rl")
def train_rl_cmd(
    out: Path = typer.Option(..., "--out", help="Output folder (PEFT adapter, rl_log.jsonl, train_meta.json)."),
    model: str = typer.Option("embedded", "--model", "-m"),
    adapter: Path | None = typer.Option(None, "--adapter", help="Existing adapter: merged first, trained on top."),
    steps: int = typer.Option(50, "--steps", min=1),
    n_tasks: int = typer.Option(200, "--n-tasks", min=1),
    num_generations: int = typer.Option(4, "--num-generations", min=2),
    prompts_per_step: int = typer.Option(2, "--prompts-per-step", min=1),
    max_completion_length: int = typer.Option(256, "--max-completion-length", min=1),
    lr: float = typer.Option(5e-5, "--lr"),
    inoculation: str = typer.Option("none", "--inoculation",
                                    help="none | please_hack | hacking_okay | neutral | dont_hack | hacking_misaligned | TEXT"),
    hack_penalty: float = typer.Option(0.0, "--hack-penalty", min=0.0, help="Subtracted when the hack detector fires."),
    micro_batch_tokens: int = MICRO_BATCH_OPTION,
    checkpoint_every: int | None = CHECKPOINT_OPTION,
    seed: int = typer.Option(0, "--seed"),
    steer: str | None = STEER_OPTION,
    ablate: str | None = ABLATE_OPTION,
    monitor: str | None = MONITOR_OPTION,
) -> None:
    """GRPO with the vulnerable graders as reward; logs the hack rate per step."""
    from characterlab.train.grpo import GRPOHackConfig, train_grpo_hacks

    cfg = GRPOHackConfig(model=model, adapter=str(adapter) if adapter else None, steps=steps, n_tasks=n_tasks,
                         num_generations=num_generations, prompts_per_step=prompts_per_step,
                         max_completion_length=max_completion_length, lr=lr, inoculation=inoculation,
                         hack_penalty=hack_penalty, seed=seed, micro_batch_tokens=micro_batch_tokens or None,
                         checkpoint_every=checkpoint_every, **vector_options(steer, ablate, monitor))
    meta = train_grpo_hacks(cfg, out)
    rates = [r["hack_rate"] for r in meta["log"] if r["hack_rate"] is not None]
    typer.echo(f"saved {out}: {meta['steps']} steps; hack rate first/last step "
               f"{rates[0] if rates else 'n/a'} / {rates[-1] if rates else 'n/a'}")
