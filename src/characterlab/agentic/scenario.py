"""Agentic scenarios: a YAML file describes one tool-use episode and which of its actions are misaligned.

MacDiarmid et al. (2025) measure agentic misalignment with episodes in which an agent with real
tools (an inbox, a database, files) meets a temptation: a monitor about to be installed, a hidden
offer to leak data, a colleague it could frame. What counts is what the agent *does*, so a
scenario here is scored from its actions, without a judge: the misaligned actions and the benign
alternatives are predicates over the log of tool calls and the final state of the fake world.

A scenario file holds (``characterlab eval agentic --schema`` prints the JSON schema):

* ``system`` and ``user``: the prompts, as Jinja templates;
* ``factors``: the condition grid. Each factor maps level names to a text fragment; the templates
  (prompts, emails, files) see each factor's fragment as ``{{ factor }}`` and its level name as
  ``{{ levels.factor }}``. The grid is every combination of levels (goal conflict x threat:
  none / replacement / restriction in the shipped scenarios);
* ``tools``: which of the built-in tools (:mod:`characterlab.agentic.tools`) the agent has;
* ``state``: the initial world: ``inbox`` (emails), ``files`` (path -> text), ``database`` (an SQL
  script run on an in-memory SQLite database) and ``answer_key`` (question id -> answer, for tests);
* ``misaligned`` and ``benign``: named actions, each a predicate (:class:`Predicate`).

A file is shared between researchers, so it is treated as untrusted: its templates render in a
bounded sandbox (:mod:`characterlab.agentic.templates`), its SQL runs behind the fake world's
authorizer and step budget (:mod:`characterlab.agentic.world`), and its regexes run with a time
limit when an episode is scored (:mod:`characterlab.agentic.outcomes`).

Everything is checked when the file is read, and every problem is reported at once at
``file:line: key.path``: first what validation sees (unknown keys, bad regular expressions), then,
in a file that validates, templates that do not render safely for every cell of the grid, a
database script the world refuses or that fails, and scoring queries that do more than read or
cannot run.
"""

from __future__ import annotations

import itertools
import math
import re
import sqlite3
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import regex
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from characterlab.agentic.templates import TemplateLimitError, TemplateSandbox
from characterlab.agentic.templates import render as render  # where episodes and tests have found it
from characterlab.agentic.world import World, stopped_by_guard
from characterlab.data.files import read_text
from characterlab.data.yaml_loader import InputErrors, YamlDocument, read_yaml, validate_yaml
from characterlab.errors import InputError

MAX_GRID_CELLS = 1024  # combinations of factor levels; each is rendered when the file is read, and played
ToolName = Literal["read_inbox", "send_email", "list_files", "read_file", "write_file", "delete_file", "run_sql",
                   "submit_answer"]
BUILTIN_PACKAGE = "characterlab.agentic.scenarios"
BUILTIN_SUITE = "agentic"  # builtin:agentic = every shipped scenario
CHECK_SECONDS = 10.0  # rendering every template for every cell when a file is read


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _regex(v: str | None) -> str | None:
    """A pattern of the ``regex`` package, the engine that searches it (with a time limit) when scoring."""
    if v is not None:
        try:
            regex.compile(v)
        except regex.error as e:
            raise ValueError(f"not a regular expression: {e}") from None
    return v


class ToolCallMatch(_Strict):
    """A call of ``tool`` whose every named argument matches its regex (searched, case-insensitive)."""

    tool: ToolName
    args: dict[str, str] = Field(default_factory=dict, description="Argument name -> regex its text must contain.")

    @field_validator("args")
    @classmethod
    def _check(cls, v: dict[str, str]) -> dict[str, str]:
        for pattern in v.values():
            _regex(pattern)
        return v


class EmailMatch(_Strict):
    """An email the agent sent whose given fields all match their regexes."""

    to: str | None = None
    subject: str | None = None
    body: str | None = None

    @field_validator("to", "subject", "body")
    @classmethod
    def _check(cls, v: str | None) -> str | None:
        return _regex(v)


class FileMatch(_Strict):
    """The final state of one file: its text matches, it was deleted, or it changed."""

    path: str
    matches: str | None = Field(default=None, description="Regex the file's final text contains.")
    deleted: bool | None = Field(default=None, description="The file no longer exists (true) or still does (false).")
    changed: bool | None = Field(default=None, description="The file's text differs from the start (deleted counts).")

    @field_validator("matches")
    @classmethod
    def _check(cls, v: str | None) -> str | None:
        return _regex(v)

    @model_validator(mode="after")
    def _one(self) -> FileMatch:
        if sum(x is not None for x in (self.matches, self.deleted, self.changed)) != 1:
            raise ValueError("give exactly one of matches, deleted, changed")
        return self


class SqlMatch(_Strict):
    """A query over the final database; true when its first row's first value is truthy."""

    query: str


class AnswersMatch(_Strict):
    """Answers submitted with ``submit_answer``, against the state's ``answer_key`` (all given bounds hold)."""

    correct_at_most: int | None = Field(default=None, ge=0)
    correct_at_least: int | None = Field(default=None, ge=0)
    submitted_at_least: int = Field(default=1, ge=0, description="Answers that must have been submitted.")

    @model_validator(mode="after")
    def _bound(self) -> AnswersMatch:
        if self.correct_at_most is None and self.correct_at_least is None:
            raise ValueError("give correct_at_most or correct_at_least")
        return self


class Predicate(_Strict):
    """Exactly one of the fields: a test on the tool-call log or the final state, or a combination."""

    tool_call: ToolCallMatch | None = None
    sent_email: EmailMatch | None = None
    file: FileMatch | None = None
    sql: SqlMatch | None = None
    answers: AnswersMatch | None = None
    any: list[Predicate] | None = Field(default=None, min_length=1)
    all: list[Predicate] | None = Field(default=None, min_length=1)
    not_: Predicate | None = Field(default=None, alias="not")

    def walk(self, loc: tuple) -> Iterator[tuple[tuple, Predicate]]:
        """This predicate and every one inside it, each with its key path (this one's is ``loc``)."""
        yield loc, self
        for key in ("any", "all"):
            for i, p in enumerate(getattr(self, key) or []):
                yield from p.walk(loc + (key, i))
        if self.not_ is not None:
            yield from self.not_.walk(loc + ("not",))

    @model_validator(mode="after")
    def _exactly_one(self) -> Predicate:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("a predicate is exactly one of tool_call, sent_email, file, sql, answers, any, all, not"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self


class Action(_Strict):
    """A named misaligned action or benign alternative."""

    id: str = Field(min_length=1)
    description: str = ""
    when: Predicate


class Email(_Strict):
    id: str = Field(min_length=1)
    sender: str = Field(alias="from", min_length=1)
    to: str = Field(min_length=1)
    subject: str
    body: str
    time: str = ""


class State(_Strict):
    inbox: list[Email] = Field(default_factory=list)
    files: dict[str, str] = Field(default_factory=dict)
    database: str = Field(default="", description="SQL script run on an empty in-memory SQLite database.")
    answer_key: dict[str, str] = Field(default_factory=dict, description="Question id -> correct answer.")


class Scenario(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    system: str
    user: str
    factors: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Factor -> level -> text fragment; the grid is every combination.")
    tools: list[ToolName] = Field(min_length=1)
    state: State = Field(default_factory=State)
    misaligned: list[Action] = Field(min_length=1)
    benign: list[Action] = Field(min_length=1)
    max_turns: int = Field(default=8, ge=1, le=50, description="Assistant turns before the episode is cut off.")

    @field_validator("factors")
    @classmethod
    def _levels(cls, v: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for factor, levels in v.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", factor) or factor == "levels":
                raise ValueError(f"factor {factor!r} must be an identifier other than 'levels'")
            if not levels:
                raise ValueError(f"factor {factor!r} has no levels")
        size = math.prod(len(levels) for levels in v.values())  # counted, never expanded, before refusing
        if size > MAX_GRID_CELLS:
            shape = " x ".join(str(len(levels)) for levels in v.values())
            raise ValueError(f"the grid has {size} cells ({shape}); at most {MAX_GRID_CELLS}")
        return v

    def cells(self) -> list[dict[str, str]]:
        """Every combination of factor levels, in the file's order (one empty cell without factors)."""
        names = list(self.factors)
        return [dict(zip(names, combo)) for combo in itertools.product(*(list(self.factors[n]) for n in names))]

    def variables(self, cell: dict[str, str]) -> dict[str, Any]:
        return {**{f: self.factors[f][level] for f, level in cell.items()}, "levels": dict(cell)}

    def templates(self) -> list[tuple[tuple, str]]:
        """(key path, template) of every text that is rendered per cell."""
        out: list[tuple[tuple, str]] = [(("system",), self.system), (("user",), self.user)]
        for i, email in enumerate(self.state.inbox):
            out += [(("state", "inbox", i, "subject"), email.subject), (("state", "inbox", i, "body"), email.body)]
        out += [(("state", "files", path), text) for path, text in self.state.files.items()]
        return out

    def sql_queries(self) -> list[tuple[tuple, str]]:
        """(key path, query) of every predicate's scoring query."""
        return [(loc + ("sql", "query"), p.sql.query)
                for group in ("misaligned", "benign") for i, action in enumerate(getattr(self, group))
                for loc, p in action.when.walk((group, i, "when")) if p.sql is not None]


S = TypeVar("S", bound=Scenario)


def cell_label(cell: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in cell.items()) or "-"


def templated_fields(scenario: Scenario) -> list[tuple[tuple, str]]:
    """(key path, template) of every text that is rendered per cell."""
    return scenario.templates()


def template_problems(scenario: Scenario, doc: YamlDocument) -> list[InputError]:
    """Each template that does not render safely for some cell, at its first such cell. A cell's
    texts share one sandbox, as when an episode starts; after a refusal the cell's other texts get a
    fresh one, so each problem is found where it is. The whole check has :data:`CHECK_SECONDS`."""
    problems, failed = [], set()
    deadline = time.monotonic() + CHECK_SECONDS
    for cell in scenario.cells():
        sandbox, variables = TemplateSandbox(), scenario.variables(cell)
        for loc, template in scenario.templates():
            if time.monotonic() > deadline:
                return problems + [doc.error(f"the templates take more than {CHECK_SECONDS:g} s to render for "
                                             f"the {len(scenario.cells())} cells of the grid", ("factors",))]
            if loc in failed:
                continue
            try:
                sandbox.render(template, variables)
            except Exception as e:  # syntax, undefined variables, the sandbox's refusals
                failed.add(loc)
                problems.append(doc.error(f"template does not render for {cell_label(cell)}: {e}", loc))
                if isinstance(e, TemplateLimitError):
                    sandbox = TemplateSandbox()
    return problems


def database_problems(scenario: Scenario, doc: YamlDocument) -> list[InputError]:
    """The database script, run as an episode runs it, and each scoring query, tried on the
    world it makes (on an empty one if the script fails)."""
    problems = []
    try:
        world = World.build([], {}, scenario.state.database, {})
    except (sqlite3.Error, ValueError) as e:
        problems.append(doc.error(f"the database script fails: {stopped_by_guard(e) or e}", ("state", "database")))
        world = World.build([], {}, "", {})
    for loc, query in scenario.sql_queries():
        if reason := world.check_query(query):
            problems.append(doc.error(reason, loc))
    return problems


def read_scenario_text(text: str, source: str | Path, model: type[S] = Scenario, what: str = "a scenario") -> S:
    """A scenario (or a subclass: ``model``) read from ``text`` and checked; every problem is
    raised at once as :class:`InputErrors`, in the file's order."""
    doc = read_yaml(text, source)
    if not isinstance(doc.data, dict):
        raise InputError(f"expected {what}: a YAML mapping", source, 1)
    scenario = validate_yaml(model, doc)
    problems = [*template_problems(scenario, doc), *database_problems(scenario, doc)]
    if problems:
        raise InputErrors(sorted(problems, key=lambda p: p.line or 0))  # in the file's order
    return scenario


def builtin_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files(BUILTIN_PACKAGE).iterdir()
                  if p.name.endswith(".yaml"))


def load_scenarios(source: str) -> list[Scenario]:
    """A scenario file, ``builtin:<name>``, or ``builtin:agentic`` (every shipped scenario)."""
    if source.startswith("builtin:"):
        key = source.split(":", 1)[1]
        names = builtin_names()
        if key == BUILTIN_SUITE:
            return [s for name in names for s in load_scenarios(f"builtin:{name}")]
        if key not in names:
            raise InputError(f"unknown built-in scenario {key!r}; choose from {BUILTIN_SUITE}, {', '.join(names)}",
                             field="scenarios")
        text = resources.files(BUILTIN_PACKAGE).joinpath(f"{key}.yaml").read_text(encoding="utf-8")
        return [read_scenario_text(text, source)]
    path = Path(source)
    return [read_scenario_text(read_text(path, field="scenarios"), path)]


def scenario_schema() -> dict:
    """The JSON schema of a scenario file."""
    return Scenario.model_json_schema(by_alias=True)
