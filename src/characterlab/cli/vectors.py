"""``characterlab vectors``: persona vectors — extract a trait's direction, project answers on it, steer with it."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Persona vectors: extract, project, steer (Chen et al. 2025).", no_args_is_help=True)


@app.command()
def extract(
    trait: Path = typer.Option(..., "--trait", help="A trait file: persona_vectors JSON or our YAML (instruction, questions, eval_prompt)."),
    out: Path = typer.Option(..., "--out", help="Folder for vectors.safetensors, meta.json and the kept answers."),
    model: str = typer.Option("embedded", "--model", "-m", help="embedded | hf:<id or path> (activations need a local model)."),
    judge: str | None = typer.Option(None, "--judge", help="A logprob judge that filters answers by the file's eval prompt; none keeps all."),
    samples: int = typer.Option(1, "--samples", min=1, help="Answers per (instruction, question, side)."),
    max_questions: int | None = typer.Option(None, "--max-questions", min=1, help="Use the file's first N questions."),
    max_new_tokens: int = typer.Option(96, "--max-new-tokens", min=1),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Mean response activation under the trait's pos prompts minus under its neg prompts, at every layer."""
    from characterlab.vectors.persona import ExtractConfig, extract_persona_vector

    meta = extract_persona_vector(trait, out, ExtractConfig(model=model, samples=samples, max_new_tokens=max_new_tokens,
                                                            temperature=temperature, judge=judge,
                                                            max_questions=max_questions, seed=seed))
    norms = meta["norms"]
    best = max(range(1, len(norms)), key=lambda i: norms[i])
    typer.echo(f"{meta['trait']}: {meta['counts']['pos']['kept']} pos / {meta['counts']['neg']['kept']} neg answers kept "
               f"(judge {meta['judge']}); largest difference at layer {best} (norm {norms[best]:.2f}) -> {out}")


@app.command()
def project(
    vector: Path = typer.Option(..., "--vector", help="A folder written by `vectors extract`."),
    answers: Path = typer.Option(..., "--answers", help="JSONL rows with question, answer and optionally system."),
    layer: int = typer.Option(..., "--layer", min=0),
    model: str = typer.Option("embedded", "--model", "-m"),
    adapter: Path | None = typer.Option(None, "--adapter", help="LoRA adapter folder on the model."),
) -> None:
    """Projection of each answer's mean response activation on the unit vector at --layer, and their mean."""
    import numpy as np

    from characterlab.data.files import read_jsonl_objects
    from characterlab.errors import InputError
    from characterlab.models.activations import response_mean_activations
    from characterlab.models.local import load_local_model
    from characterlab.models.refs import parse_model_ref
    from characterlab.vectors.persona import load_persona_vector, projections

    vectors, meta = load_persona_vector(vector)
    if layer >= len(vectors):
        raise InputError(f"the vector has layers 0..{len(vectors) - 1}", field="layer")
    rows = read_jsonl_objects(answers, field="answers")
    for line, r in rows:
        for key in ("question", "answer"):
            if not isinstance(r.get(key), str):
                raise InputError("missing or not a string", answers, line, key)
    local = load_local_model(parse_model_ref(model, adapter=adapter))
    msgs = [([{"role": "system", "content": r["system"]}] if r.get("system") else []) + [{"role": "user", "content": r["question"]}]
            for _, r in rows]
    p = projections(response_mean_activations(local, msgs, [r["answer"] for _, r in rows]), vectors, layer)
    typer.echo(json.dumps({"trait": meta["trait"], "layer": layer, "n": len(p), "mean": float(np.mean(p)),
                           "projections": [round(float(x), 4) for x in p]}))


@app.command()
def steer(
    vector: Path = typer.Option(..., "--vector", help="A folder written by `vectors extract`."),
    layer: int = typer.Option(..., "--layer", min=1),
    coef: float = typer.Option(..., "--coef", help="Multiple of the vector added at --layer (negative steers away)."),
    prompt: list[str] = typer.Option(..., "--prompt", help="A user message (repeat for more)."),
    model: str = typer.Option("embedded", "--model", "-m"),
    max_new_tokens: int = typer.Option(96, "--max-new-tokens", min=1),
    temperature: float = typer.Option(0.7, "--temperature", min=0.0),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Generate with coef x vector added to the residual stream at --layer (a forward hook)."""
    from characterlab.data.records import GenerationRequest, SamplingParams
    from characterlab.models.activations import steering
    from characterlab.models.generation import load_generator
    from characterlab.models.refs import parse_model_ref
    from characterlab.vectors.persona import load_persona_vector

    vectors, _ = load_persona_vector(vector)
    generator = load_generator(parse_model_ref(model), backend="hf")
    requests = [GenerationRequest.from_prompt(p, seed=seed * 1_000_003 + i) for i, p in enumerate(prompt)]
    with steering(generator.local.model, vectors[layer], layer, coef):
        out = generator.generate(requests, SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature))
    for p, cs in zip(prompt, out):
        typer.echo(json.dumps({"prompt": p, "coef": coef, "layer": layer, "answer": cs[0].text}))


@app.command()
def screen(
    vector: Path = typer.Option(..., "--vector", help="A folder written by `vectors extract`."),
    layer: int = typer.Option(..., "--layer", min=0),
    data: list[Path] = typer.Option(..., "--data", help="A chat data set (repeat to rank several)."),
    model: str = typer.Option("embedded", "--model", "-m", help="The model the data would train."),
    n: int = typer.Option(50, "--n", min=2, help="Examples read from each data set."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=1),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Rank data sets by how far their responses sit along the vector beyond the model's own answers
    (one JSON line each on stdout, a readable line on stderr)."""
    from characterlab.vectors.persona import screen_data

    for r in screen_data(vector, layer, [str(d) for d in data], model=model, n=n, max_new_tokens=max_new_tokens,
                         seed=seed):
        typer.echo(json.dumps(r))
        typer.echo(screen_text(r), err=True)


def screen_text(r: dict) -> str:
    """One screened data set as a line; an interval that is undefined (one example) shows as "–"."""
    bound = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    return (f"{r['data']}: {r['difference']:.3f} [{bound(r['low'])}, {bound(r['high'])}] beyond the model's own "
            f"answers along {r['trait']} at layer {r['layer']} (n {r['n']})")
