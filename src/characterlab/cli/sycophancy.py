"""``characterlab sycophancy``: feedback from simulated users, and a reward model learnt from it.

``reward`` and ``optimise`` are the training commands ``characterlab train reward`` and ``train
rlhf`` (made from the reward model's and the policy's configs, :mod:`characterlab.cli.train`) under
the names of this organism's workflow: feedback -> reward -> optimise -> checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import click
import typer
from typer.core import TyperGroup

TRAIN_COMMANDS = {"reward": "reward", "optimise": "rlhf"}  # command -> training method


class SycophancyGroup(TyperGroup):
    """The organism's own commands, and two training commands made when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *TRAIN_COMMANDS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in TRAIN_COMMANDS:
            from characterlab.cli.train import click_command
            from characterlab.train.registry import get_trainer

            return click_command(get_trainer(TRAIN_COMMANDS[name]), name)
        return super().get_command(ctx, name)


app = typer.Typer(cls=SycophancyGroup, help="The sycophancy organism: simulated users' feedback and a reward model "
                  "learnt from it.", no_args_is_help=True)


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
