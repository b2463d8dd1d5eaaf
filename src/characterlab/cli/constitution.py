"""``characterlab constitution``: validate, measure question diversity, build question sets."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from characterlab.cli.choices import Level

app = typer.Typer(rich_markup_mode=None, help="Character constitutions: validate, measure question diversity, build question sets.",
                  no_args_is_help=True)


@app.command("validate")
def constitution_validate_cmd(file: str = typer.Argument(..., help="A constitution (.txt, .jsonl, .yaml) or builtin:<name>.")) -> None:
    """Check a constitution's structure and content; every problem with its file, line and field."""
    from characterlab.character.constitution import validate_constitution

    c, problems = validate_constitution(file)
    for p in problems:
        typer.echo(f"error: {p}", err=True)
    if problems:
        raise typer.Exit(2)
    n = sum(len(t.all_questions) for t in c.traits)
    typer.echo(f"ok: {c.name} ({c.format}): {len(c.traits)} traits, {n} questions")


@app.command("diversity")
def constitution_diversity_cmd(
    file: str = typer.Argument(..., help="A constitution or builtin:<name>."),
    trait: str | None = typer.Option(None, "--trait", help="One trait (name, index or text prefix); default all."),
) -> None:
    """Diversity metrics of each trait's questions (questions + additional_questions), as JSON."""
    from characterlab.character.constitution import read_constitution
    from characterlab.character.diversity import diversity
    from characterlab.models.embeddings import SentenceEncoder

    c = read_constitution(file)
    traits = [c.trait(trait)] if trait is not None else c.traits
    enc = SentenceEncoder()
    out = {}
    for t in traits:
        key = t.name or (t.trait if trait is not None else f"{c.traits.index(t)}: {t.trait}")
        out[key] = diversity(t.all_questions, enc).to_dict()
    typer.echo(json.dumps(out, indent=2, ensure_ascii=False))


@app.command("expand")
def constitution_expand_cmd(
    file: str = typer.Argument(..., help="A constitution or builtin:<name>."),
    trait: str = typer.Option(..., "--trait", help="The trait whose questions to select (name, index or text prefix)."),
    size: int = typer.Option(..., "--size", min=2, help="Questions in the new set."),
    level: Level = typer.Option(..., "--level", help="Diversity, low to high: paraphrase < cluster < random < farthest."),
    out: Path = typer.Option(..., "--out", "-o", help="Output constitution (.yaml, .jsonl or .txt)."),
    seed: int = typer.Option(0, "--seed"),
    model: str | None = typer.Option(None, "--model", help="Grow the pool with this model first (any model ref)."),
    generate: int = typer.Option(0, "--generate", min=0, help="How many new questions to generate with --model."),
    base_url: str | None = typer.Option(None, "--base-url"),
    paraphrase_seeds: int | None = typer.Option(None, "--paraphrase-seeds", min=1,
                                                   help="With --level paraphrase: how many questions to reword "
                                                        "(default 2; more: more diverse)."),
) -> None:
    """Write a one-trait constitution whose questions are a set of --size at the chosen diversity,
    selected from the trait's questions (plus generated ones), and print its diversity."""
    from characterlab.character.constitution import write_constitution
    from characterlab.character.diversity import expand_constitution
    from characterlab.data.files import check_output_file

    check_output_file(out, "out")

    new, pool, report = expand_constitution(file, trait, size, level.value, seed, model, generate, base_url,
                                             paraphrase_seeds)
    write_constitution(new, out)
    typer.echo(json.dumps({"out": str(out), "pool": pool, "level": level.value, **report.to_dict()}, indent=2))
