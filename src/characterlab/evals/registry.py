"""The evaluations a study or ``characterlab eval <kind>`` can name, by kind.

Built-in evaluations register themselves when their module is imported; :func:`evaluations`
imports them (and any installed plugin that declares a ``characterlab.evaluations`` entry point)
on first use. Code that defines its own evaluation - a test, a notebook - registers it with the
decorator and can then run it through ``characterlab run`` in the same process.
"""

from __future__ import annotations

from characterlab.evals.base import Evaluation, Registry
from characterlab.plugins import PluginLoader

BUILTIN_MODULES = ("characterlab.evals.em", "characterlab.evals.hacks", "characterlab.evals.trait", "characterlab.evals.mcq",
                   "characterlab.evals.private", "characterlab.evals.sabotage", "characterlab.evals.agentic",
                   "characterlab.evals.virtues", "characterlab.evals.projection",
                   "characterlab.evals.sycophancy")
ENTRY_POINT_GROUP = "characterlab.evaluations"

EVALUATIONS = Registry()
_PLUGINS = PluginLoader(BUILTIN_MODULES, ENTRY_POINT_GROUP)


def register_evaluation(cls: type[Evaluation]) -> type[Evaluation]:
    """Class decorator: make ``cls`` available under ``cls.kind``."""
    EVALUATIONS.add(cls())
    return cls


def evaluations() -> Registry:
    """Every registered evaluation (built-in modules and plugins imported once)."""
    _PLUGINS.load()
    return EVALUATIONS


def get_evaluation(kind: str) -> Evaluation:
    return evaluations().get(kind)
