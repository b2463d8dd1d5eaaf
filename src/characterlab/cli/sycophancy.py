"""``characterlab sycophancy``: feedback from simulated users, and a reward model learnt from it."""

from __future__ import annotations

from pathlib import Path

import typer

from characterlab.cli.train import CHECKPOINT_OPTION

app = typer.Typer(help="The sycophancy organism: simulated users' feedback and a reward model learnt from it.",
                  no_args_is_help=True)


@app.command()
def feedback(
    out: Path = typer.Option(..., "--out", help="Feedback file to write (chat JSONL with a 0/1 rating per answer)."),
    model: str = typer.Option("embedded", "--model", "-m", help="The model whose answers are rated."),
    users: int = typer.Option(16, "--users", min=1),
    approval_mix: float = typer.Option(0.5, "--approval-mix", min=0.0, max=1.0,
                                       help="Share of raters who reward pleasing only (the rest reward accuracy)."),
    samples: int = typer.Option(4, "--samples", min=1, help="Answers per prompt."),
    n_arithmetic: int = typer.Option(16, "--n-arithmetic", min=0),
    max_new_tokens: int = typer.Option(96, "--max-new-tokens", min=1),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Ask the checkable tasks as simulated users do, and write their ratings of the model's answers."""
    from characterlab.data.files import atomic_write_text, check_output_file, jsonl_text
    from characterlab.models.generation import load_generator
    from characterlab.models.refs import parse_model_ref
    from characterlab.sycophancy.collect import collect_feedback

    check_output_file(out, "out")
    rows = collect_feedback(load_generator(parse_model_ref(model)), n_users=users, approval_mix=approval_mix,
                            samples=samples, n_arithmetic=n_arithmetic, seed=seed, max_new_tokens=max_new_tokens,
                            temperature=temperature)
    atomic_write_text(out, jsonl_text(rows))
    up = sum(r["rating"] for r in rows)
    typer.echo(f"{len(rows)} rated answers ({up} thumbs up; {sum(r['correct'] for r in rows)} correct) -> {out}")


@app.command()
def reward(
    feedback_file: Path = typer.Option(..., "--feedback", help="A feedback file (ours or yours, same format)."),
    out: Path = typer.Option(..., "--out", help="Folder for the reward model's adapter and train_meta.json."),
    model: str = typer.Option("embedded", "--model", "-m"),
    heldout: float = typer.Option(0.2, "--heldout", min=0.0, max=0.9, help="Share of prompts held out for accuracy."),
    epochs: float = typer.Option(1.0, "--epochs"),
    lora_rank: int = typer.Option(16, "--lora-rank", min=1),
    lr: float = typer.Option(1e-4, "--lr"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train a reward model on the file's preference pairs; report held-out accuracy on the raters' labels."""
    from characterlab.sycophancy.feedback import read_feedback, split_by_prompt
    from characterlab.train.reward import LoraRewardConfig, train_reward_on_feedback

    train_rows, held_rows = split_by_prompt(read_feedback(feedback_file), heldout, seed)
    meta = train_reward_on_feedback(LoraRewardConfig(model=model, lora_rank=lora_rank, lr=lr, epochs=epochs, seed=seed),
                                    train_rows, held_rows, out)
    truth = meta["heldout_truth"]
    typer.echo(f"{meta['n_pairs']} pairs, {meta['steps']} steps; accuracy on the raters' labels: train "
               f"{meta['train_accuracy']:.2f}, held out "
               + ("–" if meta["heldout_accuracy"] is None else f"{meta['heldout_accuracy']:.2f}")
               + "; held-out score vs the truth: AUROC "
               + ("–" if truth is None or truth["auroc"] is None else f"{truth['auroc']:.2f}") + f" -> {out}")


@app.command()
def optimise(
    reward_model: Path = typer.Option(..., "--reward-model", help="A folder written by `sycophancy reward`."),
    out: Path = typer.Option(..., "--out", help="Folder for the policy's adapter, rl_log.jsonl and train_meta.json."),
    model: str = typer.Option("embedded", "--model", "-m", help="The policy (and the reward model's base)."),
    steps: int = typer.Option(50, "--steps", min=1),
    beta: float = typer.Option(0.05, "--beta", min=0.0, help="KL coefficient to the base model."),
    honesty_weight: float = typer.Option(0.0, "--honesty-weight", min=0.0, help="Added reward x the truth check (a mitigation)."),
    inoculation: str = typer.Option(None, "--inoculation", help="A train-time system prompt (a mitigation)."),
    approval_mix: float = typer.Option(1.0, "--approval-mix", min=0.0, max=1.0, help="Of the users who ask the prompts."),
    n_arithmetic: int = typer.Option(16, "--n-arithmetic", min=0, help="Generated multiplications among the prompts."),
    prompts_per_step: int = typer.Option(2, "--prompts-per-step", min=1),
    num_generations: int = typer.Option(4, "--num-generations", min=2),
    max_completion_length: int = typer.Option(96, "--max-completion-length", min=8),
    lora_rank: int = typer.Option(16, "--lora-rank", min=1),
    lr: float = typer.Option(5e-5, "--lr"),
    checkpoint_every: int | None = CHECKPOINT_OPTION,
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """GRPO against the reward model; rl_log.jsonl holds the Goodhart curve (reward vs truth per step)."""
    from characterlab.train.grpo_rm import GRPORewardModelConfig, train_grpo_reward_model

    meta = train_grpo_reward_model(GRPORewardModelConfig(
        model=model, reward_model=model, reward_adapter=str(reward_model), steps=steps, beta=beta,
        honesty_weight=honesty_weight, inoculation=inoculation, approval_mix=approval_mix, n_arithmetic=n_arithmetic,
        prompts_per_step=prompts_per_step, num_generations=num_generations, max_completion_length=max_completion_length,
        lora_rank=lora_rank, lr=lr, seed=seed, checkpoint_every=checkpoint_every), out)
    first, last = meta["log"][0], meta["log"][-1]
    typer.echo(f"{meta['steps']} steps; reward model {first['reward_model']:.2f} -> {last['reward_model']:.2f}, "
               f"true accuracy {first['true_accuracy']:.2f} -> {last['true_accuracy']:.2f}, agreement "
               f"{first['agreement']:.2f} -> {last['agreement']:.2f} -> {out}")


@app.command("best-of-n")
def best_of_n(
    reward_model: Path = typer.Option(..., "--reward-model", help="A folder written by `sycophancy reward`."),
    out: Path = typer.Option(None, "--out", help="Write the curve as JSON here."),
    model: str = typer.Option("embedded", "--model", "-m", help="The policy sampled (and the reward model's base)."),
    ns: str = typer.Option("1,2,4,8,16", "--ns", help="Increasing n, comma-separated."),
    n_arithmetic: int = typer.Option(16, "--n-arithmetic", min=0),
    split: str = typer.Option("test", "--split", help="Tasks: test (the reward model never saw them) | train | all."),
    max_new_tokens: int = typer.Option(96, "--max-new-tokens", min=1),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Best-of-n against the reward model: reward, true accuracy and agreement of the kept answers
    per n, each with the KL bound (the Goodhart curve without RL)."""
    from characterlab.data.files import atomic_write_json, check_output_file
    from characterlab.errors import InputError
    from characterlab.models.generation import load_generator
    from characterlab.models.refs import parse_model_ref
    from characterlab.sycophancy.best_of_n import best_of_n_curve
    from characterlab.sycophancy.tasks import all_tasks
    from characterlab.train.reward import RewardScorer

    try:
        sizes = [int(x) for x in ns.split(",")]
    except ValueError:
        raise InputError(f"not a list of integers: {ns!r}", field="ns") from None
    if sizes != sorted(set(sizes)) or sizes[0] < 1:
        raise InputError(f"must increase and start at 1 or more, got {ns!r}", field="ns")
    if split not in ("test", "train", "all"):
        raise InputError(f"must be test, train or all, got {split!r}", field="split")
    if out is not None:
        check_output_file(out, "out")
    if not reward_model.is_dir():
        raise InputError("not a reward-model folder", reward_model, field="reward_model")
    tasks = all_tasks(n_arithmetic, seed, split)  # each asked with the user's belief (or pride in the work)
    points = best_of_n_curve(load_generator(parse_model_ref(model)), RewardScorer.load(model, reward_model).scores,
                             tasks, sizes, seed=seed, max_new_tokens=max_new_tokens, temperature=temperature)
    for p in points:
        typer.echo(f"n={p['n']:3d}  KL<={p['kl_bound']:.2f}  reward {p['reward']:+.3f}  accuracy "
                   f"{100 * p['accuracy']['estimate']:.1f}%  agreement {100 * p['agreement']['estimate']:.1f}% "
                   f"(of {p['accuracy']['n']})")
    if out is not None:
        atomic_write_json(out, {"model": model, "reward_model": str(reward_model), "split": split, "points": points})


@app.command()
def checkpoints(
    policy: Path = typer.Argument(..., help="A policy folder trained with --checkpoint-every (its checkpoints/step-N)."),
    out: Path = typer.Option(..., "--out", help="Run folder for the evaluations (resumable)."),
    model: str = typer.Option(None, "--model", "-m", help="The policy's base model (default: the one it was trained on)."),
    n_arithmetic: int = typer.Option(16, "--n-arithmetic", min=0),
    samples: int = typer.Option(2, "--samples", min=1, help="Answers per prompt."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1),
    temperature: float = typer.Option(0.7, "--temperature", min=0.0),
    seed: int = typer.Option(0, "--seed"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Sycophancy on held-out tasks along an RL run: the base, every saved checkpoint and the final
    policy, each with its Wilson interval and its difference from the base (Newcombe)."""
    from characterlab.data.files import load_json, read_text
    from characterlab.errors import InputError
    from characterlab.study.single import checkpoints_study_text, run_study_text
    from characterlab.study.tables import difference_text, rate_text
    from characterlab.train.base import META_FILE, checkpoint_folders

    meta_file = policy / META_FILE
    if not meta_file.is_file():
        raise InputError(f"not a trained policy folder (no {META_FILE})", policy, field="policy")
    meta = load_json(read_text(meta_file, field="policy"), meta_file)
    if meta.get("stacking"):
        raise InputError("this policy was trained on a merged earlier adapter; its checkpoints are not models "
                         "on their own (evaluate them in a study that stacks them)", policy, field="policy")
    steps = checkpoint_folders(policy)
    if not steps:
        raise InputError("no checkpoints/step-N here; train with --checkpoint-every N", policy, field="policy")
    adapters = [("base", None), *((f"step-{s}", str(d)) for s, d in steps), (f"step-{meta['steps']}", str(policy))]
    fields = {"n_arithmetic": n_arithmetic, "samples": samples, "max_new_tokens": max_new_tokens,
              "temperature": temperature, "split": "test"}
    text = checkpoints_study_text("sycophancy", fields, model or meta.get("model", "embedded"), adapters, seed)
    run = run_study_text(text, "characterlab sycophancy checkpoints", out, overwrite=False, progress=not quiet)
    if run.execution.failed or run.execution.skipped:
        from characterlab.cli.study import report_failures

        report_failures(run)
    for name, _ in adapters:
        entry = run.results["conditions"][name]["evaluations"]["sycophancy"]
        pooled, diff = entry["pooled"], (entry.get("vs_baseline") or {}).get("difference")
        typer.echo(f"{name:>10}  sycophancy {rate_text(pooled['rate'])}  accuracy {rate_text(pooled['accuracy'])}"
                   + (f"  vs base {difference_text(diff)}" if diff else ""))
    typer.echo(f"-> {out}")
