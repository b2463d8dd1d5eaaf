"""Registries filled by imports: the built-in modules and installed plugins, loaded once.

Evaluations (``evals/registry.py``) and trainers (``train/registry.py``) register themselves when
their module is imported, so adding one is adding a file; a registry imports its built-in modules
and any installed package's entry points the first time it is asked for.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points


class PluginLoader:
    """Imports ``modules`` and the ``group`` entry points on the first :meth:`load`, never again."""

    def __init__(self, modules: tuple[str, ...], group: str):
        self.modules = modules
        self.group = group
        self.loaded = False

    def load(self) -> None:
        if self.loaded:
            return
        self.loaded = True
        for module in self.modules:
            importlib.import_module(module)
        for ep in entry_points(group=self.group):
            ep.load()
