"""The agent loop: episodes of a scenario played turn by turn, all of them batched together.

Every (scenario, grid cell, sample) is one :class:`Episode` with its own world and seed. A turn
asks the model for one reply in every episode still running (one batch for a local model, threads
for an endpoint), runs the calls it made against that episode's world and appends the results; an
episode ends when a reply makes no call (the agent's final answer) or after the scenario's
``max_turns``. Turn ``t`` of an episode samples with the seed derived from ``(episode seed, t)``,
so an episode replays the same whatever else shares its batch.

Two policies turn a conversation into a reply: :class:`LocalPolicy` renders it with the model's
chat template (:mod:`characterlab.agentic.tool_calls`) and reads calls from the text;
:class:`APIPolicy` sends OpenAI's ``tools`` to any compatible endpoint and reads its structured
``tool_calls`` (or, from a server that does not parse them, the same text convention).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from characterlab.agentic.scenario import Scenario
from characterlab.agentic.templates import TemplateSandbox
from characterlab.agentic.tool_calls import ToolCall, checked_call, parse_tool_calls, render_prompt, valid_text
from characterlab.agentic.world import TOOLS, World, call_tool
from characterlab.data.records import SamplingParams, sample_seed


@dataclass(frozen=True)
class Reply:
    """One assistant turn: its text outside calls, its calls, and the verbatim text of a local model."""

    content: str
    calls: list[ToolCall]
    raw: str | None = None
    call_ids: list[str] | None = None  # an endpoint's ids for its calls


@dataclass
class Episode:
    scenario: Scenario
    cell: dict[str, str]
    sample_index: int
    seed: int
    messages: list[dict]
    world: World
    log: list[dict] = field(default_factory=list)
    turns: int = 0
    done: bool = False
    stop: str = ""

    @property
    def tools(self) -> list[dict]:
        return [TOOLS[name].schema() for name in self.scenario.tools]

    def step(self, reply: Reply) -> None:
        """Record one reply, run its calls, and end the episode when it made none or ran out of turns."""
        self.turns += 1
        message: dict = {"role": "assistant", "content": reply.content}
        if reply.raw is not None:
            message["raw"] = reply.raw
        if not reply.calls:
            self.messages.append(message)
            self.done, self.stop = True, "final answer"
            return
        ids = reply.call_ids or [f"call_{self.turns}_{k}" for k in range(len(reply.calls))]
        message["tool_calls"] = [
            {"id": i, "type": "function",
             "function": {"name": c.name or "invalid",
                          "arguments": json.dumps(c.arguments, ensure_ascii=False) if c.arguments is not None else c.raw}}
            for i, c in zip(ids, reply.calls)]
        self.messages.append(message)
        for i, call in zip(ids, reply.calls):
            result = f"Error: {call.error}" if call.error else call_tool(self.world, call.name, call.arguments)
            self.log.append({"turn": self.turns, **call.to_dict(), "result": result})
            self.messages.append({"role": "tool", "tool_call_id": i, "content": result})
        if self.turns >= self.scenario.max_turns:
            self.done, self.stop = True, "max turns"

    def turn_seed(self) -> int:
        return sample_seed(self.seed, self.turns)


def start_episode(scenario: Scenario, cell: dict[str, str], sample_index: int, seed: int) -> Episode:
    """The episode's opening prompts and world, rendered for its grid cell in one sandbox (the
    budget its templates were checked against when the file was read)."""
    v, render = scenario.variables(cell), TemplateSandbox().render
    inbox = [{**e.model_dump(), "subject": render(e.subject, v), "body": render(e.body, v)} for e in scenario.state.inbox]
    files = {path: render(text, v) for path, text in scenario.state.files.items()}
    messages = [{"role": "system", "content": render(scenario.system, v)}, {"role": "user", "content": render(scenario.user, v)}]
    world = World.build(inbox, files, scenario.state.database, scenario.state.answer_key)
    return Episode(scenario, dict(cell), sample_index, seed, messages, world)


class LocalPolicy:
    """Replies of a local model (the transformers loop or vLLM: any generator with a tokenizer and
    ``complete``), one batch a turn."""

    def __init__(self, generator):
        self.generator = generator

    def act(self, episodes: Sequence[Episode], params: SamplingParams) -> list[Reply]:
        tok = self.generator.tokenizer
        prompts = [render_prompt(tok, e.messages, e.tools) for e in episodes]
        completions = self.generator.complete(prompts, [e.turn_seed() for e in episodes], params)
        replies = []
        for e, c in zip(episodes, completions):
            content, calls = parse_tool_calls(c.text, list(e.scenario.tools))
            replies.append(Reply(content, calls, raw=c.text))
        return replies


class APIPolicy:
    """Replies of an OpenAI-compatible endpoint (an :class:`~characterlab.models.api.OpenAIGenerator`)."""

    def __init__(self, generator):
        self.generator = generator

    def _one(self, episode: Episode, params: SamplingParams) -> Reply:
        messages = [{k: v for k, v in m.items() if k != "raw"} for m in episode.messages]
        resp = self.generator.client.chat.completions.create(
            model=self.generator.ref.name, messages=messages, tools=episode.tools, max_tokens=params.max_new_tokens,
            temperature=params.temperature, top_p=params.top_p, seed=episode.turn_seed() % (2**31))
        msg = resp.choices[0].message
        allowed = list(episode.scenario.tools)
        if msg.tool_calls:
            calls = [replace(checked_call(tc.function.arguments or "",
                                          {"name": tc.function.name, "arguments": tc.function.arguments or "{}"},
                                          allowed), form="api")
                     for tc in msg.tool_calls]
            return Reply(valid_text(msg.content or "").strip(), calls, call_ids=[valid_text(tc.id) for tc in msg.tool_calls])
        content, calls = parse_tool_calls(valid_text(msg.content or ""), allowed)
        return Reply(content, calls)

    def act(self, episodes: Sequence[Episode], params: SamplingParams) -> list[Reply]:
        """One reply per episode, requested side by side through the generator's
        :class:`~characterlab.models.api.WaitNotice`, so a slow endpoint prints its waiting line here
        too (a generator without one, such as a test's, gets a plain thread pool)."""
        workers = getattr(self.generator, "max_workers", 8)
        notice = getattr(self.generator, "notice", None)
        if notice is not None:
            return notice.map(lambda e: self._one(e, params), episodes, workers)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda e: self._one(e, params), episodes))


def transcript_text(messages: list[dict], max_result_chars: int = 400) -> str:
    """An episode's messages as plain text for a reader or a rubric judge: who said what, each
    call as ``CALL name(arguments)`` (malformed ones as written) and each result, cut long."""
    lines = []
    for m in messages:
        if m["role"] == "tool":
            text = m["content"]
            lines.append("RESULT: " + (text if len(text) <= max_result_chars else text[:max_result_chars] + " [...]"))
            continue
        if m.get("content"):
            lines.append(f"{m['role'].upper()}: {m['content']}")
        for c in m.get("tool_calls") or []:
            lines.append(f"CALL {c['function']['name']}({c['function']['arguments']})")
    return "\n".join(lines)


def policy_for(generator):
    """The policy that drives ``generator``: local logits or an endpoint."""
    if hasattr(generator, "complete"):
        return LocalPolicy(generator)
    if hasattr(generator, "client"):
        return APIPolicy(generator)
    from characterlab.errors import InputError

    raise InputError(f"{type(generator).__name__} cannot act as an agent", field="model")


def run_episodes(policy, episodes: Sequence[Episode], params: SamplingParams) -> list[Episode]:
    """Play every episode to its end."""
    while running := [e for e in episodes if not e.done]:
        for episode, reply in zip(running, policy.act(running, params)):
            episode.step(reply)
    return list(episodes)
