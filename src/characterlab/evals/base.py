"""What an evaluation is: a typed config, three stages (generate, score, summarise) and its metrics.

An evaluation answers one question about a model - how often it is misaligned, how often it
hacks, how strongly it expresses a trait - as a number with a confidence interval. A study runs
every evaluation on every (condition, seed) as three units, each keyed by the hash of its
parameters:

* ``generate``: sample the model's answers (:meth:`Evaluation.generate`);
* ``judge``: score them - a judge, the sandboxed graders, an embedding (:meth:`Evaluation.score`);
* ``metric``: summarise the scored rows with 95% intervals (:meth:`Evaluation.summarise`).

:meth:`Evaluation.stages` turns the study's entry for it (its :class:`EvalConfig`) into those
units' parameters, with every input file resolved and content-hashed, so that equal parameters
mean an equal result. Results pool seeds (:meth:`Evaluation.pool`) into either a rate
(``pooled["rate"]``: k, n and a Wilson interval) or a mean (``pooled["mean"]``), which is all the
study's results, report and CLI need to know of an evaluation they have never seen.

Adding an evaluation is adding one module that subclasses :class:`Evaluation` and decorates it with
:func:`~characterlab.evals.registry.register_evaluation`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from characterlab.data.records import Message
from characterlab.judge.refs import JudgeRef
from characterlab.stats import difference_power, wilson_interval

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # names of studies, conditions and evaluations: folder- and file-safe
NAME_HELP = "use letters, digits, '-', '_' or '.' only, starting with a letter or digit"
# names join into file names (an inspect log is STUDY_CONDITION_EVALUATION.eval), which stop at 255 bytes
MAX_NAME_LENGTH = 64

# The judge stage's parameters carry this key only while the unit runs (study/units.py:
# run_judge): the seconds an attempt at a judge endpoint may take. It changes no score, so it is
# never in a unit's key.
ENDPOINT_TIMEOUT = "endpoint_timeout"


def check_name(v: str) -> str:
    import re

    if not re.match(NAME_PATTERN, v) or ".." in v:
        raise ValueError(NAME_HELP)
    if len(v) > MAX_NAME_LENGTH:
        raise ValueError(f"a name is at most {MAX_NAME_LENGTH} characters (it is used in folder and file names); "
                         f"this one has {len(v)}")
    return v


class EvalConfig(BaseModel):
    """One entry of a study's ``evaluations:``; each evaluation adds its own fields."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    kind: str

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return check_name(v)


@dataclass(frozen=True)
class PlanContext:
    """What an evaluation may read while it is planned: the study's model, judge and folder."""

    model: str
    judge: JudgeRef
    base_dir: Path
    vectors: dict[str, str] = field(default_factory=dict)  # the study's persona vectors: name -> unit key

    def locate(self, source: str) -> str:
        """A file named in the study, relative to the study's folder (``builtin:`` names as they are)."""
        return source if source.startswith("builtin:") else str((self.base_dir / source).resolve())


@dataclass(frozen=True)
class EvalStages:
    """The parameters of an evaluation's three units (hashed into their keys)."""

    generate: dict
    judge: dict
    metric: dict
    judge_verb: str = "judge"  # how the judge unit's label reads ("grade" for code)
    generate_deps: tuple[str, ...] = ()  # units the generate stage reads besides the model (a study's persona vector)


@dataclass(frozen=True)
class Cell:
    """One table cell of the report: a value and its grey interval or count."""

    text: str
    note: str = ""
    pre: bool = False  # long text (an answer): shown in a scrolling block


@dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    note: str = ""


@dataclass(frozen=True)
class Figure:
    path: Path
    caption: str


def pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def num(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def rate_cell(rate: dict) -> Cell:
    if rate["estimate"] is None:
        return Cell("–", f"{rate['k']}/{rate['n']}")
    return Cell(pct(rate["estimate"]), f"[{pct(rate['low'])}, {pct(rate['high'])}] {rate['k']}/{rate['n']}")


def rate(k: int, n: int) -> dict:
    """A rate as results carry it: counts and a Wilson 95% interval."""
    return {"k": k, "n": n, **wilson_interval(k, n).to_dict()}


def measured_nothing(evaluation: Evaluation, pooled: dict) -> bool:
    """A rate over answers that measured no misalignment at all: the evaluation's misaligned share
    is empty (no episode made a well-formed tool call; no answer could be judged) while it has
    answers. Tables then say "not measured" instead of showing 0 of n with an interval."""
    share = evaluation.misaligned_share(pooled) if "rate" in pooled else None
    return share is not None and share["n"] == 0 and pooled["rate"]["n"] > 0


def pooled_by_condition(results: dict, name: str) -> dict[str, dict]:
    """The pooled result of evaluation ``name`` per condition that ran it, in the results' order
    (a condition may run a subset of the study's evaluations: its ``evaluations:`` list)."""
    return {c: cond["evaluations"][name]["pooled"] for c, cond in results["conditions"].items()
            if name in cond["evaluations"]}


def seed_spread(values: list[float]) -> dict | None:
    """Mean and t 95% interval of per-seed values (seeds vary training and sampling)."""
    if len(values) < 2:
        return None
    from scipy.stats import t

    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((r - mean) ** 2 for r in values) / (n - 1))
    half = t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "n_seeds": n}


def judge_factory(params: dict, **kwargs: Any):
    """The :class:`~characterlab.judge.factory.JudgeFactory` of a judge stage's ``params``: its judge,
    endpoint and the run's endpoint timeout (``ENDPOINT_TIMEOUT``, absent unless the run set one)."""
    from characterlab.judge.factory import JudgeFactory

    return JudgeFactory(params["judge_spec"], base_url=params.get("judge_base_url"),
                        timeout=params.get(ENDPOINT_TIMEOUT), **kwargs)


class Evaluation(ABC):
    """One registered evaluation. Subclasses set the class attributes and the abstract methods."""

    kind: ClassVar[str]  # the study's ``kind:`` and ``characterlab eval <kind>``
    title: ClassVar[str]  # what its headline number is, e.g. "EM rate"
    config: ClassVar[type[EvalConfig]]
    headline: ClassVar[Literal["rate", "mean"]] = "rate"
    uses_judge: ClassVar[bool] = False  # scored by the study's judge (the CLI offers --judge)
    needs_internals: ClassVar[bool] = False  # reads logits or hooks: generated on the hf backend (models/backend.py)
    examples_key: ClassVar[str | None] = None  # where results.json keeps its sample rows
    plot_stem: ClassVar[str | None] = None  # file name of its per-condition plot (default: the kind)
    score_fields: ClassVar[tuple[str, ...]] = ()  # fields of a scored row that score that one answer
    # an evaluation that reads files in a format of its own gives their JSON schema here (a
    # staticmethod returning it); ``characterlab eval <kind> --schema`` prints it
    input_schema: ClassVar[Any] = None

    @abstractmethod
    def stages(self, cfg: EvalConfig, ctx: PlanContext) -> EvalStages:
        """The parameters of the three units; every file read is resolved and hashed here."""

    @abstractmethod
    def generate(self, params: dict, generator: Any) -> list[dict]:
        """The model's answers, one row each (``generator`` is a :class:`~characterlab.models.generation.Generator`)."""

    @abstractmethod
    def score(self, params: dict, rows: list[dict], generate_params: dict) -> tuple[list[dict], dict]:
        """The rows with their scores, and a small result (which judge, how many). A judge made
        from ``params`` takes :func:`judge_factory`, which gives it the run's endpoint timeout."""

    @abstractmethod
    def summarise(self, params: dict, rows: list[dict]) -> dict:
        """One seed's metrics from the scored rows."""

    @abstractmethod
    def seed_value(self, metric: dict) -> float | None:
        """One seed's headline number (a rate in [0, 1], or a mean)."""

    def pool(self, per_seed: dict[int, dict]) -> dict:
        """Seeds pooled. The default suits a mean; a rate evaluation returns ``rate`` (counts + Wilson)."""
        values = [v for v in (self.seed_value(m) for m in per_seed.values()) if v is not None]
        return {"mean": sum(values) / len(values) if values else None, "ci": None, "seed_spread": seed_spread(values)}

    def difference(self, a: dict, b: dict) -> dict | float | None:
        """Pooled ``a`` minus pooled ``b``. Rates: the Newcombe interval, whether it excludes 0, the
        minimum detectable increase over ``b`` at the n used and the n per condition that 80% power
        needs at the observed rates (:func:`~characterlab.stats.difference_power`). Means: a plain difference."""
        if self.headline == "rate":
            ra, rb = a["rate"], b["rate"]
            return difference_power(ra["k"], ra["n"], rb["k"], rb["n"])
        return None if a.get("mean") is None or b.get("mean") is None else a["mean"] - b["mean"]

    def compare(self, a: dict, b: dict) -> dict:
        """Two results entries of this evaluation (``pooled``, ``per_seed``), A minus B."""
        return {"difference": self.difference(a["pooled"], b["pooled"])}

    def chat_prompts(self, cfg: EvalConfig) -> bool:
        """Whether this evaluation asks the model only through ``Generator.generate`` (chat
        requests), where an icl organism puts its examples (``models/in_context.py``); one that
        reads logits or plays tool-use episodes says False, and a study refuses the pair."""
        return True

    def describe(self, metric: dict) -> str:
        """One line for the CLI about one seed's metrics."""
        v = self.seed_value(metric)
        return f"{self.title} " + (pct(v) if self.headline == "rate" else num(v))

    def prompts(self, generate_params: dict, rows: list[dict]) -> list[list[Message]]:
        """The messages each row's answer replied to, for transcripts (exports, reading). The
        default reads the row's own ``system`` (if any) and ``question``; an evaluation whose rows
        keep neither rebuilds them from its generate parameters."""
        return [([Message("system", r["system"])] if r.get("system") else []) + [Message("user", r["question"])]
                for r in rows]

    def headline_figures(self, pooled: dict) -> dict[str, float]:
        """The pooled headline as named numbers (estimate, 95% interval, n where there is one)."""
        if self.headline == "rate":
            r = pooled["rate"]
            return {"rate": r["estimate"], "ci_low": r["low"], "ci_high": r["high"], "k": r["k"], "n": r["n"]}
        figures = {"mean": pooled.get("mean")}
        if pooled.get("ci"):
            figures |= {"ci_low": pooled["ci"]["low"], "ci_high": pooled["ci"]["high"]}
        return {k: v for k, v in figures.items() if v is not None}

    def summary_extras(self, pooled: dict) -> dict[str, str]:
        """Extra columns for the report's summary table (means of scores, say)."""
        return {}

    def misaligned_share(self, pooled: dict) -> dict | None:
        """The pooled share of misaligned outcomes as a rate (``k``, ``n``, Wilson interval), for the
        suite's headline ``misalignment_score`` (:mod:`characterlab.study.headline`); None when
        this evaluation does not measure misalignment. ``n == 0`` means nothing was judged."""
        return None

    def examples(self, judged: list[tuple[dict, list[dict]]]) -> list[dict]:
        """Rows worth reading from every (cell, scored rows) of this kind; cell = condition, seed, evaluation."""
        return []

    def examples_table(self, examples: list[dict]) -> Table | None:
        return None

    def tables(self, results: dict, name: str) -> list[Table]:
        """Report tables of evaluation ``name`` beyond the summary (per question, per grader...)."""
        return []

    def figures(self, results: dict, name: str, plots: Path) -> list[Figure]:
        """Report plots of evaluation ``name`` beyond the per-condition bars."""
        return []


@dataclass
class Registry:
    """Evaluations by kind. One default instance (:data:`characterlab.evals.registry.EVALUATIONS`)
    holds the built-in ones; tests and plugins may build their own."""

    by_kind: dict[str, Evaluation] = field(default_factory=dict)

    def add(self, evaluation: Evaluation) -> None:
        self.by_kind[evaluation.kind] = evaluation

    def get(self, kind: str) -> Evaluation:
        if kind not in self.by_kind:
            raise KeyError(f"unknown evaluation kind {kind!r}; choose from {', '.join(sorted(self.by_kind))}")
        return self.by_kind[kind]

    def kinds(self) -> list[str]:
        return sorted(self.by_kind)
