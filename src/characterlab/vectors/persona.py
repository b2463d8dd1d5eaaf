"""Persona vectors (Chen et al. 2025): a trait as a direction in the residual stream.

A trait file (the persona_vectors format: ``instruction`` pairs of a trait-eliciting ``pos`` and
an opposite ``neg`` system prompt, ``questions``, and an ``eval_prompt`` with ``{question}`` and
``{answer}``; as JSON, or the same keys in YAML) drives the extraction:

1. the model answers every question under every pos and under every neg system prompt;
2. a judge (optional) scores each answer for the trait with the file's eval prompt, a logprob
   judge over the next token's 0-100 distribution; pos answers that do not show the trait
   (score < 50) and neg answers that do are dropped, as in the paper. Without a judge every answer
   is kept, and the metadata says so;
3. each kept answer's hidden states are averaged over its own tokens (prompt excluded), at every
   layer (:mod:`characterlab.models.activations` for the layer convention);
4. the vector at layer l is mean(pos) - mean(neg). Saved as ``vectors.safetensors`` (shape
   (L + 1, hidden)) and ``meta.json`` (model, trait file hash, judge, counts, per-layer norms).

The projection of an answer on a vector is its mean response activation dotted with the unit
vector: the same reading for monitoring, screening data and checking steering.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from characterlab.data.files import atomic_write_json, load_json, read_text, sha256_file, staged_dir
from characterlab.errors import InputError
from characterlab.vectors.files import META_FILE, VECTORS_FILE, load_persona_vector

__all__ = ["META_FILE", "VECTORS_FILE", "ExtractConfig", "TraitFile", "extract_persona_vector", "load_persona_vector",
           "mean_interval", "projections", "read_trait_file", "screen_data"]



@dataclass(frozen=True)
class TraitFile:
    name: str
    pairs: list[tuple[str, str]]
    questions: list[str]
    eval_prompt: str
    sha256: str


def read_trait_file(path: str | Path) -> TraitFile:
    """A persona_vectors trait file (JSON) or ours (YAML, same keys); errors name file, line, key path."""
    from characterlab.data.yaml_loader import dotted, read_yaml

    path = Path(path)
    text = read_text(path, field="trait")
    if path.suffix == ".json":
        data = load_json(text, path)

        def line(_loc) -> int | None:
            return None
    else:
        doc = read_yaml(text, path)
        data = doc.data

        def line(loc) -> int | None:
            return doc.line(loc)

    def fail(msg: str, *loc) -> InputError:
        return InputError(msg, path, line(loc), dotted(loc) or None)

    if not isinstance(data, dict):
        raise fail("a trait file is a mapping with instruction, questions and eval_prompt")
    pairs = data.get("instruction")
    if not isinstance(pairs, list) or not pairs:
        raise fail("a non-empty list of {pos, neg} pairs", "instruction")
    out_pairs = []
    for i, p in enumerate(pairs):
        for key in ("pos", "neg"):
            if not isinstance(p, dict) or not isinstance(p.get(key), str) or not p[key].strip():
                raise fail("missing or not a non-empty string", "instruction", i, key)
        out_pairs.append((p["pos"], p["neg"]))
    questions = data.get("questions")
    if not isinstance(questions, list) or not questions or not all(isinstance(q, str) and q.strip() for q in questions):
        raise fail("a non-empty list of non-empty strings", "questions")
    prompt = data.get("eval_prompt")
    if not isinstance(prompt, str) or "{question}" not in prompt or "{answer}" not in prompt:
        raise fail("a string with {question} and {answer}", "eval_prompt")
    return TraitFile(path.stem, out_pairs, questions, prompt, sha256_file(path))


@dataclass
class ExtractConfig:
    model: str = "embedded"
    samples: int = 1  # answers per (pair, question, side)
    max_new_tokens: int = 96
    temperature: float = 1.0
    judge: str | None = None  # a logprob judge reference; None keeps every answer
    threshold: float = 50.0
    max_questions: int | None = None
    seed: int = 0
    extra: dict = field(default_factory=dict)


def trait_scores(questions: list[str], answers: list[str], eval_prompt: str, judge: str) -> list[float | None]:
    """The file's eval prompt through a logprob judge: 0-100, None where the judge gives no number."""
    from characterlab.judge.factory import JudgeFactory
    from characterlab.judge.logprob import aggregate_logprobs

    factory = JudgeFactory(judge, use_cache=False)
    if factory.ref.is_offline:
        raise InputError("the offline judge scores EM answers only; a trait needs a logprob judge "
                         "(openai:<model>, hf:<path>, embedded) or none", field="judge")
    prompts = [eval_prompt.replace("{question}", q).replace("{answer}", a) for q, a in zip(questions, answers)]
    return [aggregate_logprobs(top, allow_special=False).value for top in factory.backend().top_logprobs(prompts)]


def extract_persona_vector(trait_path: str | Path, out: str | Path, cfg: ExtractConfig) -> dict:
    """Generate, filter, average and subtract (see the module docstring); returns the metadata."""
    from safetensors.numpy import save_file

    from characterlab.data.records import GenerationRequest, SamplingParams
    from characterlab.models.activations import response_mean_activations
    from characterlab.models.generation import load_generator
    from characterlab.models.refs import parse_model_ref

    trait = read_trait_file(trait_path)
    questions = trait.questions[: cfg.max_questions] if cfg.max_questions else trait.questions
    ref = parse_model_ref(cfg.model)
    if ref.kind == "openai":
        raise InputError("persona vectors read a model's activations: it must be local (embedded or hf:)", field="model")
    generator = load_generator(ref, backend="hf")
    cells = [(side, system, q) for pos, neg in trait.pairs for side, system in (("pos", pos), ("neg", neg))
             for q in questions]
    requests = [GenerationRequest.from_prompt(q, system=system, n=cfg.samples, seed=cfg.seed * 1_000_003 + i)
                for i, (_, system, q) in enumerate(cells)]
    completions = generator.generate(requests, SamplingParams(max_new_tokens=cfg.max_new_tokens,
                                                               temperature=cfg.temperature))
    rows = [{"side": side, "system": system, "question": q, "answer": c.text}
            for (side, system, q), cs in zip(cells, completions) for c in cs]
    if cfg.judge:
        scores = trait_scores([r["question"] for r in rows], [r["answer"] for r in rows], trait.eval_prompt, cfg.judge)
        for r, s in zip(rows, scores):
            r["trait_score"] = s
        kept = [r for r in rows if r["trait_score"] is not None
                and (r["trait_score"] >= cfg.threshold) == (r["side"] == "pos")]
    else:
        kept = [r for r in rows if r["answer"].strip()]
    counts = {side: {"generated": sum(r["side"] == side for r in rows), "kept": sum(r["side"] == side for r in kept)}
              for side in ("pos", "neg")}
    if not counts["pos"]["kept"] or not counts["neg"]["kept"]:
        raise InputError(f"no {'pos' if not counts['pos']['kept'] else 'neg'} answer was kept ({counts}); "
                         "more samples, another judge or none", field="judge")
    acts = response_mean_activations(generator.local, [[{"role": "system", "content": r["system"]},
                                                        {"role": "user", "content": r["question"]}] for r in kept],
                                     [r["answer"] for r in kept])
    side = np.array([r["side"] == "pos" for r in kept])
    vectors = acts[side].mean(axis=0) - acts[~side].mean(axis=0)
    meta = {"trait": trait.name, "trait_file_sha256": trait.sha256, "model": str(ref), "judge": cfg.judge or "none",
            "threshold": cfg.threshold if cfg.judge else None, "counts": counts, "n_questions": len(questions),
            "samples": cfg.samples, "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
            "seed": cfg.seed, "shape": list(vectors.shape),
            "layer_convention": "row l = hidden_states[l]: 0 embeddings, l >= 1 the output of decoder block l - 1",
            "norms": [round(float(n), 4) for n in np.linalg.norm(vectors, axis=1)]}
    with staged_dir(out) as tmp:
        save_file({"vectors": vectors.astype(np.float32)}, str(tmp / VECTORS_FILE))
        atomic_write_json(tmp / META_FILE, meta)
        atomic_write_json(tmp / "answers.json", kept)
    return meta


def projections(activations: np.ndarray, vectors: np.ndarray, layer: int) -> np.ndarray:
    """Each row's activation at ``layer`` dotted with the unit vector there: shape (n,)."""
    v = vectors[layer]
    return activations[:, layer] @ (v / np.linalg.norm(v))


def _prompt_and_response(example) -> tuple[list[dict], str]:
    """The messages before the last assistant turn, and that turn: what a data set teaches to answer."""
    msgs = example.to_dicts()
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    return msgs[:last], msgs[last]["content"]


def screen_data(vector_dir: str | Path, layer: int, data: list[str | Path], model: str = "embedded", n: int = 50,
                max_new_tokens: int = 128, seed: int = 0) -> list[dict]:
    """Before any training: how far each data set's responses sit along the vector beyond what the
    model itself would answer to the same prompts (Chen et al.'s projection difference), per set,
    ranked from the largest. Both sides are read by the model being screened."""
    from characterlab.data.chat_data import read_chat_data
    from characterlab.data.records import GenerationRequest, Message, SamplingParams
    from characterlab.models.activations import response_mean_activations
    from characterlab.models.generation import load_generator
    from characterlab.models.refs import parse_model_ref

    vectors, meta = load_persona_vector(vector_dir)
    if not 0 <= layer < len(vectors):
        raise InputError(f"the vector has layers 0..{len(vectors) - 1}", field="layer")
    generator = load_generator(parse_model_ref(model), backend="hf")
    out = []
    for path in data:
        pairs = [_prompt_and_response(ex) for ex in read_chat_data(path, max_examples=n)]
        requests = [GenerationRequest(messages=tuple(Message(m["role"], m["content"]) for m in p), n=1,
                                      seed=seed * 1_000_003 + i) for i, (p, _) in enumerate(pairs)]
        own = [cs[0].text for cs in generator.generate(requests, SamplingParams(max_new_tokens=max_new_tokens,
                                                                                 temperature=1.0))]
        prompts = [p for p, _ in pairs]
        data_proj = projections(response_mean_activations(generator.local, prompts, [r for _, r in pairs]), vectors, layer)
        own_proj = projections(response_mean_activations(generator.local, prompts, own), vectors, layer)
        diff = data_proj - own_proj
        low, high = mean_interval(diff)
        out.append({"data": str(path), "n": len(diff), "data_projection": float(data_proj.mean()),
                    "model_projection": float(own_proj.mean()), "difference": float(diff.mean()),
                    "low": low, "high": high, "trait": meta["trait"], "layer": layer})
    return sorted(out, key=lambda r: -r["difference"])


def mean_interval(values: np.ndarray) -> tuple[float | None, float | None]:
    """The normal 95% interval of the mean of ``values``; (None, None) for a single value, whose
    spread is undefined (a NaN bound would be bare ``NaN`` in the JSON lines ``vectors screen``
    prints, which other readers reject)."""
    if len(values) < 2:
        return None, None
    mean, half = float(values.mean()), 1.96 * float(values.std(ddof=1)) / np.sqrt(len(values))
    return mean - half, mean + half
