"""Persona vectors inside a fine-tune: preventative steering, ablation, and monitoring.

Chen et al. (2025) find that the shift a fine-tune causes along a trait's vector shows in the
model's activations before it shows in its answers, and that adding the vector *while training*
(preventative steering: the optimiser no longer needs to move the model along it, since the hook
already does) and nothing at evaluation blocks most of the shift. CAFT (Casademunt et al. 2025)
instead removes the direction from the residual stream during training. Both are hooks held for
the length of ``trainer.train()``; the adapter saved afterwards carries no hook.

Monitoring reads, every ``every`` optimizer steps (and before the first), the mean projection of
the hidden state at the last prompt token of held-out prompts (default: the first paraphrase of
each EM question) on the unit vector, with the training hooks lifted for the reading, so the curve
shows the weights' own shift. It is recorded in ``train_meta.json`` as ``monitor`` and its net
change as ``projection_shift``.

Calibration (the persona-mixture view made measurable): before the first step the monitor also
reads the same prompts under the trait's own pos and neg system prompts (those the vector was
extracted with, from its ``answers.json``): the untrained model *playing* the persona and its
opposite. Their mean projections anchor a linear scale, so each reading also gives
``persona_weight = (projection - neg) / (pos - neg)``: 0 where the model stands like its
anti-persona, 1 where it stands like the prompted persona - the quantity ``theory simulate``
calls pi_evil, read off the activations.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

from characterlab.errors import InputError


@dataclass
class SteerInTraining:
    """Add ``coef`` x the vector at ``layer`` in every training forward pass (none at evaluation)."""

    vector: str
    layer: int
    coef: float


@dataclass
class AblateInTraining:
    """Remove the component along the vector at each of ``layers`` during training."""

    vector: str
    layers: list[int]


MONITOR_EVERY = 10  # optimizer steps between readings, unless a study or --monitor says otherwise


@dataclass
class MonitorProjection:
    """Read the projection on the vector at ``layer`` every ``every`` steps."""

    vector: str
    layer: int
    every: int = MONITOR_EVERY
    prompts: list[str] = field(default_factory=list)  # empty: the EM questions' first paraphrases


def _persona_systems(folder: str) -> dict[str, list[str]]:
    """The pos and neg system prompts a vector was extracted with (its kept answers), if recorded."""
    from pathlib import Path

    from characterlab.data.files import load_json, read_text

    path = Path(folder) / "answers.json"
    try:
        rows = load_json(read_text(path), path)
    except InputError:  # not recorded, or not readable: the prompts are only a report's detail
        return {}
    out: dict[str, list[str]] = {"pos": [], "neg": []}
    for r in rows if isinstance(rows, list) else []:
        if isinstance(r, dict) and r.get("side") in out and isinstance(r.get("system"), str) and r["system"] not in out[r["side"]]:
            out[r["side"]].append(r["system"])
    return out


def default_monitor_prompts() -> list[str]:
    from characterlab.data.questions import load_questions

    return [q.paraphrases[0] for q in load_questions("builtin:em").questions]


class VectorTraining:
    """The vector options of one training run: hooks around ``train()`` and the monitor callback."""

    def __init__(self, steer: SteerInTraining | None, ablate: AblateInTraining | None,
                 monitor: MonitorProjection | None):
        from characterlab.vectors.files import layer_vector

        self.steer, self.ablate, self.monitor = steer, ablate, monitor
        self.tokenizer = None
        self._steer_v = layer_vector(steer.vector, steer.layer, "steer.layer") if steer else None
        self._ablate_v = None
        if ablate:
            if not ablate.layers:
                raise InputError("at least one layer", field="ablate.layers")
            # the direction is the vector of each ablated layer; one vector folder, row per layer
            self._ablate_v = {layer: layer_vector(ablate.vector, layer, "ablate.layers").vector for layer in ablate.layers}
        self._monitor_v = layer_vector(monitor.vector, monitor.layer, "monitor.layer") if monitor else None
        if monitor and monitor.every < 1:
            raise InputError("must be >= 1", field="monitor.every")
        self._prompts = (monitor.prompts or default_monitor_prompts()) if monitor else []
        self.curve: list[dict] = []
        self.seconds = 0.0  # spent reading: what the monitor adds to training time
        self.calibration: dict | None = None
        self._systems = _persona_systems(monitor.vector) if monitor else {}
        self._stack: ExitStack | None = None
        self._model = None

    @property
    def any(self) -> bool:
        return bool(self.steer or self.ablate or self.monitor)

    def _hooks_on(self) -> None:
        from characterlab.models.activations import ablation, steering

        stack = ExitStack()
        if self._steer_v is not None:
            stack.enter_context(steering(self._model, self._steer_v.vector, self.steer.layer, self.steer.coef))
        for layer, v in (self._ablate_v or {}).items():
            stack.enter_context(ablation(self._model, v, [layer]))
        self._stack = stack

    def _hooks_off(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    @classmethod
    def of(cls, cfg) -> VectorTraining:
        """The options of a :class:`~characterlab.train.base.TrainConfig`, checked (files, layers)."""
        return cls(cfg.steer, cfg.ablate, cfg.monitor)

    def train(self, trainer) -> Any:
        """``trainer.train()`` with the hooks held and the monitor reading along."""
        self._model = trainer.model
        self.tokenizer = trainer.processing_class
        if self.monitor:
            trainer.add_callback(self._callback())
        self._hooks_on()
        try:
            return trainer.train()
        finally:
            self._hooks_off()

    def _projection(self, system: str | None = None):
        from characterlab.models.activations import last_prompt_activations

        msgs = [([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": p}]
                for p in self._prompts]
        return last_prompt_activations(self._model, self.tokenizer, msgs, self.monitor.layer) @ self._monitor_v.unit

    def read(self, step: int) -> None:
        start = time.perf_counter()
        self._hooks_off()  # the weights' own shift, not the hook's
        try:
            proj = self._projection()
            if step == 0 and self._systems.get("pos") and self._systems.get("neg"):
                anchors = {side: float(sum(self._projection(s).mean() for s in systems) / len(systems))
                           for side, systems in self._systems.items()}
                if anchors["pos"] != anchors["neg"]:
                    self.calibration = {**anchors, "n_systems": {k: len(v) for k, v in self._systems.items()}}
        finally:
            self._hooks_on()
        entry = {"step": step, "projection": round(float(proj.mean()), 5),
                 "sd": round(float(proj.std(ddof=1)), 5) if len(proj) > 1 else None}
        if self.calibration:
            c = self.calibration
            entry["persona_weight"] = round((entry["projection"] - c["neg"]) / (c["pos"] - c["neg"]), 5)
        self.curve.append(entry)
        self.seconds += time.perf_counter() - start

    def _callback(self):
        from transformers import TrainerCallback

        owner = self

        class ProjectionMonitor(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                owner.read(0)

            def on_step_end(self, args, state, control, **kw):
                if state.global_step % owner.monitor.every == 0 or state.global_step == state.max_steps:
                    if not owner.curve or owner.curve[-1]["step"] != state.global_step:
                        owner.read(state.global_step)

        return ProjectionMonitor()

    def meta(self) -> dict:
        """What ``train_meta.json`` records: the options, the monitor curve and its net change."""
        if not self.any:
            return {}
        out: dict = {"vectors": {k: asdict(v) for k, v in (("steer", self.steer), ("ablate", self.ablate),
                                                              ("monitor", self.monitor)) if v is not None}}
        if self.monitor:
            out["vectors"]["monitor"]["n_prompts"] = len(self._prompts)
            out["monitor"] = self.curve
            out["projection_shift"] = (self.curve[-1]["projection"] - self.curve[0]["projection"]) if len(self.curve) > 1 else None
            out["monitor_calibration"] = self.calibration
            out["monitor_seconds"] = round(self.seconds, 3)
        return out

