"""A toy evaluation defined outside the package: the share of answers shorter than a limit.

Registering it is all it takes for a study to name ``kind: toy_brevity`` and for
``characterlab eval toy_brevity`` to exist; nothing in study/, evals/ or cli/ changes.
"""

from __future__ import annotations

from pydantic import Field

from characterlab.data.records import GenerationRequest, SamplingParams
from characterlab.evals.base import (
    EvalConfig,
    EvalStages,
    Evaluation,
    PlanContext,
    rate,
    seed_spread,
)
from characterlab.evals.registry import register_evaluation


class BrevityConfig(EvalConfig):
    prompts: list[str] = Field(default_factory=lambda: ["Say hello.", "Name a colour."], min_length=1)
    max_chars: int = Field(default=20, ge=1, description="An answer this short or shorter counts as brief.")
    max_new_tokens: int = Field(default=8, ge=1)


@register_evaluation
class BrevityEvaluation(Evaluation):
    """Share of answers at most max_chars long."""

    kind = "toy_brevity"
    title = "brevity rate"
    config = BrevityConfig

    def stages(self, cfg: BrevityConfig, ctx: PlanContext) -> EvalStages:
        return EvalStages(generate={"task": self.kind, "prompts": cfg.prompts, "max_new_tokens": cfg.max_new_tokens},
                          judge={"task": self.kind, "max_chars": cfg.max_chars}, metric={"task": self.kind},
                          judge_verb="measure")

    def generate(self, params: dict, generator) -> list[dict]:
        requests = [GenerationRequest.from_prompt(p, n=2, seed=params["seed"] * 31 + i) for i, p in enumerate(params["prompts"])]
        outs = generator.generate(requests, SamplingParams(max_new_tokens=params["max_new_tokens"]))
        return [{"prompt": p, "answer": c.text} for p, cs in zip(params["prompts"], outs) for c in cs]

    def score(self, params: dict, rows: list[dict], generate_params: dict) -> tuple[list[dict], dict]:
        return [{**r, "brief": len(r["answer"]) <= params["max_chars"]} for r in rows], {"n": len(rows)}

    def summarise(self, params: dict, rows: list[dict]) -> dict:
        return {"rate": rate(sum(r["brief"] for r in rows), len(rows))}

    def seed_value(self, metric: dict) -> float | None:
        return metric["rate"]["estimate"]

    def pool(self, per_seed: dict[int, dict]) -> dict:
        return {"rate": rate(sum(m["rate"]["k"] for m in per_seed.values()), sum(m["rate"]["n"] for m in per_seed.values())),
                "seed_spread": seed_spread([self.seed_value(m) for m in per_seed.values()])}
