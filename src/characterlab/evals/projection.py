"""How far a model stands along a persona vector: the projection shift of Chen et al. (2025).

For each prompt of a question set (every paraphrase; default the EM questions), the hidden state
at the last prompt token at ``layer`` - where the model stands before it answers - dotted with the
unit vector. A condition's value is the mean over prompts; since every condition reads the same
prompts, its difference from the baseline is a *paired* mean difference over prompts, with a t
interval: the projection shift a fine-tune caused, measured from activations alone (no judge,
no sampling). Beside an EM evaluation it lets a study ask whether the shift predicts the
behaviour (``study/results.py`` reports their rank correlation across conditions).
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import Field

from characterlab.evals.base import EvalConfig, EvalStages, Evaluation, PlanContext, num, seed_spread
from characterlab.evals.registry import register_evaluation


class ProjectionConfig(EvalConfig):
    vector: str = Field(description="A persona vector: a name under the study's vectors:, or a folder "
                                    "(characterlab vectors extract) relative to the study.")
    layer: int = Field(ge=0, description="The layer whose vector row is read (hidden_states index).")
    questions: str = Field(default="builtin:em", description="Prompts: a question file; every paraphrase is one prompt.")


def paired_difference(a: dict[str, float], b: dict[str, float]) -> dict | None:
    """Mean of ``a[p] - b[p]`` over the prompts both have, with a t 95% interval."""
    from scipy.stats import t

    keys = sorted(set(a) & set(b))
    if len(keys) < 2:
        return None
    d = [a[k] - b[k] for k in keys]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return {"estimate": mean, "low": mean - half, "high": mean + half, "n": n, "scale": "mean",
            "significant": not (mean - half <= 0 <= mean + half)}


@register_evaluation
class ProjectionEvaluation(Evaluation):
    """Mean projection of the last prompt token on a persona vector (activations, no judge)."""

    kind = "projection"
    title = "projection on the persona vector"
    config = ProjectionConfig
    headline = "mean"
    needs_internals = True
    score_fields = ("projection",)

    def chat_prompts(self, cfg) -> bool:
        return False  # activations, not answers

    def stages(self, cfg: ProjectionConfig, ctx: PlanContext) -> EvalStages:
        from characterlab.data.files import sha256_folder
        from characterlab.data.questions import questions_identity
        from characterlab.vectors.files import layer_vector

        questions = questions_identity(ctx.locate(cfg.questions))
        if cfg.vector in ctx.vectors:  # extracted by the study itself: its unit is read when this one runs
            key = ctx.vectors[cfg.vector]
            return EvalStages(
                generate={"task": "projection", "vector": {"unit": key, "name": cfg.vector}, "layer": cfg.layer,
                          "questions": questions},
                judge={"task": "projection", "trait": cfg.vector}, metric={"task": "projection"}, judge_verb="read",
                generate_deps=(key,))
        folder = Path(ctx.locate(cfg.vector))
        v = layer_vector(folder, cfg.layer)
        return EvalStages(
            generate={"task": "projection", "vector": {"path": str(folder), "sha256": sha256_folder(folder)},
                      "layer": cfg.layer, "questions": questions},
            judge={"task": "projection", "trait": v.trait}, metric={"task": "projection"}, judge_verb="read")

    def generate(self, params: dict, generator) -> list[dict]:
        """``params["vector"]["path"]``: the folder the unit runner resolved (and checked unchanged)."""
        from characterlab.data.questions import load_checked_questions
        from characterlab.models.activations import last_prompt_activations
        from characterlab.vectors.files import layer_vector

        v = layer_vector(params["vector"]["path"], params["layer"])
        prompts = [(q.id, i, p, q.system) for q in load_checked_questions(params["questions"])
                   for i, p in enumerate(q.paraphrases)]
        messages = [([{"role": "system", "content": s}] if s else []) + [{"role": "user", "content": p}]
                    for _, _, p, s in prompts]
        local = generator.local
        proj = last_prompt_activations(local.model, local.tokenizer, messages, params["layer"]) @ v.unit
        return [{"id": f"{qid}#{i}", "question": p, **({"system": s} if s else {}), "projection": float(x)}
                for (qid, i, p, s), x in zip(prompts, proj)]

    def score(self, params: dict, rows: list[dict], generate_params: dict) -> tuple[list[dict], dict]:
        return [dict(r) for r in rows], {"n": len(rows), "trait": params["trait"]}

    def summarise(self, params: dict, rows: list[dict]) -> dict:
        values = [r["projection"] for r in rows]
        spread = seed_spread(values)  # a t interval over prompts
        return {"mean": sum(values) / len(values) if values else None, "n": len(values),
                "ci": {"low": spread["low"], "high": spread["high"]} if spread else None,
                "per_prompt": {r["id"]: r["projection"] for r in rows}}

    def seed_value(self, metric: dict) -> float | None:
        return metric["mean"]

    def pool(self, per_seed: dict[int, dict]) -> dict:
        """Seeds averaged per prompt (each seed trains its own model), then over prompts."""
        per_prompt: dict[str, list[float]] = {}
        for m in per_seed.values():
            for k, x in m["per_prompt"].items():
                per_prompt.setdefault(k, []).append(x)
        means = {k: sum(xs) / len(xs) for k, xs in per_prompt.items()}
        spread = seed_spread(list(means.values()))
        values = [m["mean"] for m in per_seed.values() if m["mean"] is not None]
        return {"mean": sum(means.values()) / len(means) if means else None,
                "ci": {"low": spread["low"], "high": spread["high"]} if spread else None,
                "seed_spread": seed_spread(values), "n": len(means), "per_prompt": means}

    def difference(self, a: dict, b: dict) -> dict | None:
        return paired_difference(a.get("per_prompt") or {}, b.get("per_prompt") or {})

    def describe(self, metric: dict) -> str:
        if metric.get("mean") is None:
            return f"projection {num(None)}"
        text = f"projection {metric['mean']:.3f}"
        ci = metric.get("ci")
        return text + (f" (95% CI {ci['low']:.3f} to {ci['high']:.3f})" if ci else "")
