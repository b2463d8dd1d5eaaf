"""The training methods a study, a train unit or ``characterlab train <method>`` can name.

Built-in methods register themselves when their module is imported; :func:`trainers` imports them
(and any installed plugin that declares a ``characterlab.trainers`` entry point) on first use.
Code that defines its own method - a test, a notebook - registers it with the decorator and can
then name it in a study run in the same process. The evaluations' registry works the same way
(:mod:`characterlab.evals.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from characterlab.plugins import PluginLoader
from characterlab.train.base import Trainer

BUILTIN_MODULES = ("characterlab.train.sft", "characterlab.train.dpo", "characterlab.train.grpo",
                   "characterlab.train.grpo_rm", "characterlab.train.reward")
ENTRY_POINT_GROUP = "characterlab.trainers"


@dataclass
class TrainerRegistry:
    """Trainers by method. One default instance (:data:`TRAINERS`) holds the built-in ones."""

    by_method: dict[str, Trainer] = field(default_factory=dict)

    def add(self, trainer: Trainer) -> None:
        self.by_method[trainer.method] = trainer

    def get(self, method: str) -> Trainer:
        if method not in self.by_method:
            raise KeyError(f"unknown training method {method!r}; choose from {', '.join(self.methods())}")
        return self.by_method[method]

    def methods(self) -> list[str]:
        return sorted(self.by_method)

    def organisms(self) -> list[str]:
        """The methods a study's organism may name."""
        return [m for m in self.methods() if self.by_method[m].organism]


TRAINERS = TrainerRegistry()
_PLUGINS = PluginLoader(BUILTIN_MODULES, ENTRY_POINT_GROUP)


def register_trainer(cls: type[Trainer]) -> type[Trainer]:
    """Class decorator: make ``cls`` available under ``cls.method``."""
    TRAINERS.add(cls())
    return cls


def trainers() -> TrainerRegistry:
    """Every registered trainer (built-in modules and plugins imported once)."""
    _PLUGINS.load()
    return TRAINERS


def get_trainer(method: str) -> Trainer:
    return trainers().get(method)
