"""``characterlab theory simulate``: configured persona-mixture training runs, printed and plotted.

A config names the personas (prior weight, hack probability per context), which one counts as
*evil*, default training settings, and one or more runs that differ in where training happens
(e.g. the plain task vs the task with an inoculation prompt)::

    name: two personas
    personas:
      aligned: {prior: 0.97, hack: {task: 0.05, task_inoculated: 0.6, test: 0.02}}
      evil:    {prior: 0.03, hack: {task: 0.8,  task_inoculated: 0.85, test: 0.7}}
    evil: evil
    training: {method: rl, steps: 150, lr: 2.0}
    runs:
      - {name: no inoculation, contexts: {task: 1.0}}
      - {name: inoculation prompt, contexts: {task_inoculated: 1.0}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from characterlab.errors import InputError
from characterlab.theory.personas import (
    PersonaMixture,
    Reward,
    TrainingConfig,
    Trajectory,
    simulate,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN or inf anywhere is an input error


Weight = Annotated[float, Field(ge=0)]  # a context's (or a demonstration's) share: not negative


class PersonaSpec(_Strict):
    prior: float = Field(gt=0, lt=1 + 1e-12)
    hack: dict[str, float]


class TrainingSpec(_Strict):
    method: Literal["rl", "sft", "sft_bayes"] | None = None
    contexts: dict[str, Weight] | None = None
    demos: dict[str, dict[Literal["hack", "honest"], Weight]] | None = None
    steps: int | None = Field(default=None, ge=0)
    lr: float | None = Field(default=None, gt=0)
    learn_phi: bool | None = None
    reward: dict[Literal["hack", "honest"], float] | None = None
    estimator: Literal["exact", "reinforce"] | None = None
    samples: int | None = Field(default=None, ge=1)
    seed: int | None = None


class RunSpec(TrainingSpec):
    name: str


class TheoryConfig(_Strict):
    name: str
    description: str = ""
    personas: dict[str, PersonaSpec] = Field(min_length=2)
    evil: str = "evil"
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    runs: list[RunSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> TheoryConfig:
        contexts = list(next(iter(self.personas.values())).hack)
        for name, p in self.personas.items():
            if list(p.hack) != contexts:
                raise ValueError(f"persona {name!r} must give a hack probability for the same contexts, in the "
                                 f"same order: {contexts}")
            if not all(0 < v < 1 for v in p.hack.values()):
                raise ValueError(f"persona {name!r}: hack probabilities must lie strictly between 0 and 1")
        if abs(sum(p.prior for p in self.personas.values()) - 1) > 1e-6:
            raise ValueError("persona priors must sum to 1")
        if self.evil not in self.personas:
            raise ValueError(f"evil persona {self.evil!r} is not among the personas")
        for where, t in (("training", self.training), *((f"run {r.name!r}", r) for r in self.runs)):
            for what, weights in (("contexts", t.contexts), *((f"demos.{c}", d) for c, d in (t.demos or {}).items())):
                if weights is not None and not sum(weights.values()) > 0:
                    raise ValueError(f"{where}: {what} weights must not all be zero")
        for r in self.runs:
            for c in {**(r.contexts or {}), **(self.training.contexts or {}), **(r.demos or {}), **(self.training.demos or {})}:
                if c not in contexts:
                    raise ValueError(f"run {r.name!r}: unknown context {c!r}; contexts are {contexts}")
        return self

    @property
    def context_names(self) -> list[str]:
        return list(next(iter(self.personas.values())).hack)

    def mixture(self) -> PersonaMixture:
        names = list(self.personas)
        return PersonaMixture.from_probabilities(
            names, self.context_names, np.array([self.personas[k].prior for k in names]),
            np.array([[self.personas[k].hack[c] for c in self.context_names] for k in names]))

    def training_config(self, run: RunSpec) -> TrainingConfig:
        merged = {**self.training.model_dump(exclude_none=True), **run.model_dump(exclude_none=True, exclude={"name"})}
        if "reward" in merged:
            merged["reward"] = Reward(**merged["reward"])
        return TrainingConfig(**merged)


def example_configs() -> list[str]:
    from importlib import resources

    return sorted(p.name[:-5] for p in resources.files("characterlab.theory.examples").iterdir() if p.name.endswith(".yaml"))


def resolve_config(spec: str) -> Path:
    """A path, or ``builtin:<name>`` for a shipped example."""
    if spec.startswith("builtin:"):
        from importlib import resources

        name = spec.split(":", 1)[1]
        if name not in example_configs():
            raise InputError(f"unknown example {name!r}; choose from {', '.join(example_configs())}", field="config")
        return Path(str(resources.files("characterlab.theory.examples").joinpath(f"{name}.yaml")))
    return Path(spec)


def load_theory_config(path: str | Path) -> TheoryConfig:
    from characterlab.data.files import read_text
    from characterlab.data.yaml_loader import load_yaml_model

    path = Path(path)
    if not path.is_file():
        raise InputError("no such config file", path, field="config")
    return load_yaml_model(TheoryConfig, read_text(path, field="config"), path, "a mapping (name, personas, ...)")


def persona_coefficient(m: PersonaMixture, persona: int, context: int) -> float:
    """P(hack | c, k) - P(hack | c, not k), the rest of the mixture weighted by pi: how strongly
    rewarding a hack in context c selects persona k."""
    pi, h = m.pi, m.h
    others = [j for j in range(len(pi)) if j != persona]
    h_not = float(pi[others] @ h[others, context] / pi[others].sum())
    return float(h[persona, context] - h_not)


def run_config(cfg: TheoryConfig) -> dict:
    """Every run of the config: per-step pi and P(hack | c), and d pi_evil / d step at the start."""
    m0 = cfg.mixture()
    evil = m0.index(cfg.evil)
    out = {"name": cfg.name, "description": cfg.description, "personas": m0.personas, "contexts": m0.contexts,
           "evil": cfg.evil, "runs": []}
    for run in cfg.runs:
        tc = cfg.training_config(run)
        traj: Trajectory = simulate(m0, tc)
        w = m0.context_weights(tc.contexts) if tc.method == "rl" else None
        train_ctx = [c for c in m0.contexts if (tc.contexts if tc.method == "rl" else tc.demos).get(c)]
        out["runs"].append({
            "name": run.name,
            "training": {**{k: v for k, v in tc.__dict__.items() if k != "reward"}, "reward": tc.reward.__dict__},
            "start": {
                "dpi_evil_per_step_analytic": float(traj.analytic_dpi[evil]),
                "dpi_evil_per_step_finite_difference": float(traj.finite_difference_dpi[evil]),
                "dpi_evil_first_step": float(traj.first_step_dpi[evil]),
                "dpi_per_step_analytic": dict(zip(m0.personas, traj.analytic_dpi.tolist())),
                "evil_coefficient": {c: persona_coefficient(m0, evil, m0.contexts.index(c)) for c in train_ctx},
                "coefficients": {p: {c: persona_coefficient(m0, k, m0.contexts.index(c)) for c in train_ctx}
                                 for k, p in enumerate(m0.personas)},
                "training_context_weights": dict(zip(m0.contexts, w.tolist())) if w is not None else None,
            },
            "steps": [{"step": i, "pi": dict(zip(m0.personas, traj.pi[i].tolist())),
                       "p_hack": dict(zip(m0.contexts, traj.p_hack[i].tolist()))} for i in range(len(traj.pi))],
        })
    return out


def format_text(result: dict, every: int = 1) -> str:
    lines = [f"# {result['name']}"]
    personas, contexts = result["personas"], result["contexts"]
    for run in result["runs"]:
        s = run["start"]
        lines.append(f"\n## {run['name']}  ({run['training']['method']}, lr {run['training']['lr']}, "
                     f"{run['training']['steps']} steps, learn_phi={run['training']['learn_phi']})")
        for p, per_c in s["coefficients"].items():
            coef = ", ".join(f"{c}: {v:+.4f}" for c, v in per_c.items())
            lines.append(f"P(hack|c,{p}) - P(hack|c,not {p}) in training contexts: {coef}")
        lines.append(f"d pi_{result['evil']} / d step at start: analytic {s['dpi_evil_per_step_analytic']:+.6e}, "
                     f"finite difference {s['dpi_evil_per_step_finite_difference']:+.6e}, "
                     f"first step {s['dpi_evil_first_step']:+.6e}")
        lines.append("d pi / d step at start, every persona (analytic): "
                     + ", ".join(f"{p}: {v:+.3e}" for p, v in s["dpi_per_step_analytic"].items()))
        head = ["step"] + [f"pi[{p}]" for p in personas] + [f"P(hack|{c})" for c in contexts]
        lines.append("  ".join(f"{h:>14s}" for h in head))
        steps = run["steps"]
        for row in steps:
            if row["step"] % every and row["step"] != steps[-1]["step"]:
                continue
            vals = [f"{row['step']:>14d}"] + [f"{row['pi'][p]:>14.6f}" for p in personas] + \
                   [f"{row['p_hack'][c]:>14.6f}" for c in contexts]
            lines.append("  ".join(vals))
    return "\n".join(lines)


def plot_result(result: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, axes = plt.subplots(len(runs), 2, figsize=(10, 3.0 * len(runs)), squeeze=False)
    for row, run in zip(axes, runs):
        steps = [s["step"] for s in run["steps"]]
        for p in result["personas"]:
            row[0].plot(steps, [s["pi"][p] for s in run["steps"]], label=p, lw=2 if p == result["evil"] else 1.2)
        row[0].set_title(f"{run['name']}: persona weights", fontsize=9)
        row[0].set_ylim(0, 1)
        row[0].legend(fontsize=7)
        for c in result["contexts"]:
            row[1].plot(steps, [s["p_hack"][c] for s in run["steps"]], label=c)
        row[1].set_title(f"{run['name']}: P(hack | context)", fontsize=9)
        row[1].set_ylim(0, 1)
        row[1].legend(fontsize=7)
        for ax in row:
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
    fig.suptitle(result["name"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
