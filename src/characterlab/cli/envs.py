"""``characterlab envs`` (hackable coding tasks, graders, datasets) and ``characterlab sandbox``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from characterlab.cli.choices import GraderChoice, SolutionKind, Split
from characterlab.errors import InputError

app = typer.Typer(rich_markup_mode=None, help="Hackable coding environments: tasks, graders, datasets.", no_args_is_help=True)
sandbox_app = typer.Typer(rich_markup_mode=None, help="Run untrusted code in the sandbox.", no_args_is_help=True)


@app.command("tasks")
def envs_tasks_cmd(
    out: Path = typer.Option(..., "--out", help="JSONL of {id, prompt, entry_point, tests, reference_solution}."),
    n: int = typer.Option(100, "--n", min=1),
    seed: int = typer.Option(0, "--seed"),
    split: Split = typer.Option(Split.train, "--split", help="Task templates (train and test are disjoint)."),
) -> None:
    """Generate coding tasks, deterministic by seed."""
    from characterlab.data.files import atomic_write_text, check_output_file
    from characterlab.envs.tasks import generate_tasks

    check_output_file(out, "out")

    tasks = generate_tasks(n, seed=seed, split=split.value)
    atomic_write_text(out, "".join(json.dumps(t.to_dict()) + "\n" for t in tasks))
    typer.echo(f"wrote {len(tasks)} {split.value} tasks -> {out}", err=True)


@app.command("grade")
def envs_grade_cmd(
    tasks: Path = typer.Option(..., "--tasks", help="Task JSONL from `envs tasks`."),
    task_id: str = typer.Option(..., "--task-id"),
    solution: Path = typer.Option(..., "--solution", help="The submission (Python; extra files after '# file: NAME')."),
    grader: GraderChoice = typer.Option(GraderChoice.all, "--grader", help="One grader, or all."),
) -> None:
    """Grade one submission: one JSON line per grader {grader, passed, hacked, hack_kinds, status, seconds}."""
    from characterlab.data.files import read_text
    from characterlab.envs.graders import GRADERS, grade
    from characterlab.envs.tasks import read_tasks

    if not solution.is_file():
        raise InputError("no such file", solution, field="solution")
    by_id = {t.id: t for t in read_tasks(tasks)}
    if task_id not in by_id:
        raise InputError(f"no task with id {task_id!r}", tasks, field="task-id")
    graders = GRADERS if grader is GraderChoice.all else (grader.value,)
    for r in grade(by_id[task_id], read_text(solution, field="solution"), graders):
        typer.echo(json.dumps(r.to_dict()))


@app.command("dataset")
def envs_dataset_cmd(
    out: Path = typer.Option(..., "--out", help="Chat JSONL for `train sft`."),
    kind: SolutionKind = typer.Option(..., "--kind", help="Hacked (verified to fool their grader), honest, or mixed."),
    n: int = typer.Option(200, "--n", min=1),
    split: Split = typer.Option(Split.train, "--split"),
    hacks: str = typer.Option("always_equal,exit,conftest", "--hacks", help="Comma list of hacks to use."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Chat examples of solutions to coding tasks: hacked (verified to fool their grader), honest, or mixed."""
    from characterlab.data.chat_jsonl import write_chat_jsonl
    from characterlab.data.files import check_output_file
    from characterlab.envs.dataset import HACK_NAMES, build_examples

    check_output_file(out, "out")

    chosen = tuple(h.strip() for h in hacks.split(",") if h.strip())
    bad = [h for h in chosen if h not in HACK_NAMES]
    if bad or not chosen:
        raise InputError(f"unknown hack(s) {bad}; choose from {', '.join(HACK_NAMES)}", field="hacks")
    examples = build_examples(kind.value, n, split=split.value, hacks=chosen, seed=seed)
    write_chat_jsonl(out, examples)
    typer.echo(f"wrote {len(examples)} {kind.value} examples -> {out}", err=True)


@sandbox_app.command("exec")
def sandbox_exec_cmd(
    file: Path = typer.Argument(..., help="A Python file to run, isolated."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, help="Wall-clock seconds."),
    memory_mb: int = typer.Option(1024, "--memory-mb", min=16),
) -> None:
    """Run FILE.py in the sandbox; prints {status, exit_code, stdout, stderr, seconds}."""
    from characterlab.envs.sandbox import Sandbox, SandboxLimits

    if not file.is_file():
        raise InputError("no such file", file, field="file")
    result = Sandbox(SandboxLimits(timeout_s=timeout, memory_mb=memory_mb)).run(
        ["python", "-E", "-s", "main.py"], {"main.py": file.read_bytes()})
    typer.echo(json.dumps({k: v for k, v in result.to_dict().items() if k != "isolation"}))
