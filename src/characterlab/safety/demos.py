"""Agentic safety demonstrations: a training scenario plays its aligned actions in the fake world.

A training scenario is an evaluation scenario (:mod:`characterlab.agentic.scenario`: prompts,
factor grid, tools, world, misaligned and benign predicates) plus a ``demonstration``: the turns an
aligned agent takes, each some tool calls or a final message. Playing it runs the calls on the
scenario's world (so every tool result is the world's real answer), then classifies the episode
with the scenario's own predicates: a demonstration that is not benign, or that trips a misaligned
action, is an input error at the file's line. Each cell of the factor grid gives one example, so
the same aligned behaviour is shown under every pressure the grid applies. The example is the
episode in the Hermes tool convention (calls in ``<tool_call>`` blocks, results in user turns),
the form the agent loop shows a model whose chat template has no tools of its own.

A training scenario file is read like an evaluation scenario (:func:`~characterlab.agentic.scenario.read_scenario_text`):
its templates, the demonstration's included, render in the bounded sandbox, its SQL runs behind the
world's guards, and every problem is reported at once.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from characterlab.agentic.scenario import Scenario, read_scenario_text
from characterlab.agentic.templates import TemplateSandbox
from characterlab.data.records import ChatExample, Message
from characterlab.errors import InputError

BUILTIN_PACKAGE = "characterlab.safety.scenarios"


class DemoCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool: str
    args: dict[str, Any] = Field(default_factory=dict)


class DemoTurn(BaseModel):
    """One assistant turn: ``say`` (text, Jinja like the prompts) and/or ``calls``; a turn without
    calls ends the episode."""

    model_config = ConfigDict(extra="forbid")

    say: str = ""
    calls: list[DemoCall] = Field(default_factory=list)


class TrainingScenario(Scenario):
    demonstration: list[DemoTurn] = Field(min_length=1)

    @model_validator(mode="after")
    def _ends_in_words(self) -> TrainingScenario:
        if self.demonstration[-1].calls:
            raise ValueError("the demonstration must end with a turn that says something and calls nothing")
        for turn in self.demonstration:
            for c in turn.calls:
                if c.tool not in self.tools:
                    raise ValueError(f"the demonstration calls {c.tool!r}, which is not among the scenario's tools")
        return self

    def templates(self) -> list[tuple[tuple, str]]:
        """The scenario's templates, then the demonstration's: what it says and its text arguments."""
        out = super().templates()
        for i, turn in enumerate(self.demonstration):
            out.append((("demonstration", i, "say"), turn.say))
            out += [(("demonstration", i, "calls", j, "args", k), x)
                    for j, c in enumerate(turn.calls) for k, x in c.args.items() if isinstance(x, str)]
        return out


def read_training_scenario(text: str, source: str) -> TrainingScenario:
    return read_scenario_text(text, source, TrainingScenario, "a training scenario")


def builtin_training_scenarios() -> list[TrainingScenario]:
    files = sorted(p for p in resources.files(BUILTIN_PACKAGE).iterdir() if p.name.endswith(".yaml"))
    return [read_training_scenario(p.read_text(encoding="utf-8"), f"builtin-safety:{p.name}") for p in files]


def play_demonstration(scenario: TrainingScenario, cell: dict[str, str]) -> tuple[list[dict], dict]:
    """The episode's messages (OpenAI form) and its classification, for one grid cell."""
    from characterlab.agentic.episode import Reply, start_episode
    from characterlab.agentic.outcomes import classify
    from characterlab.agentic.tool_calls import checked_call

    episode = start_episode(scenario, cell, 0, 0)
    v, render = scenario.variables(cell), TemplateSandbox().render
    for turn in scenario.demonstration:
        calls = []
        for c in turn.calls:
            obj = {"name": c.tool, "arguments": {k: render(x, v) if isinstance(x, str) else x for k, x in c.args.items()}}
            call = checked_call(json.dumps(obj, ensure_ascii=False), obj, list(scenario.tools))  # the tool's schema
            if call.error:
                raise InputError(f"the demonstration of {scenario.name} makes a malformed call: {call.error}",
                                 field="demonstration")
            calls.append(call)
        episode.step(Reply(render(turn.say, v), calls))
    return episode.messages, classify(scenario, episode.log, episode.world)


def demonstration_examples(scenarios: list[TrainingScenario]) -> list[ChatExample]:
    """One chat example per (scenario, cell); a demonstration that is not cleanly benign is refused."""
    from characterlab.agentic.tool_calls import hermes_messages
    from characterlab.agentic.world import TOOLS

    out = []
    for s in scenarios:
        for cell in s.cells():
            messages, verdict = play_demonstration(s, cell)
            if verdict["outcome"] != "benign":
                raise InputError(f"the demonstration of {s.name} is {verdict['outcome']} in cell {cell} "
                                 f"({verdict}); it must be benign", field="demonstration")
            chat = hermes_messages(messages, [TOOLS[name].schema() for name in s.tools])
            out.append(ChatExample(tuple(Message(m["role"], m["content"]) for m in chat)))
    return out

