"""The fake world an agent acts in, and the tools it acts through.

The state is real, not scripted replies: an inbox and an outbox, a folder of text files, an
in-memory SQLite database and a record of submitted answers. A tool call changes the state and
returns what a real tool would (the rows of a query, a file's text, an error message), so a
scenario's predicates can ask what the agent actually did: which query ran, which file it
rewrote, what it sent to whom.

The database is SQLite in memory, and every statement on it - the scenario's own script, the
agent's queries, the predicates' scoring queries, writing and restoring a snapshot - runs under an
authorizer and a step budget of its own (:meth:`World._budget`): nothing may ATTACH or DETACH (so no
statement - ``VACUUM INTO`` included - can touch a file) or make a virtual table; no PRAGMA runs
but the few a dump and its restore need; a scoring query may only read; the progress handler stops
a statement past its budget of SQLite VM instructions. The database holds at most
:data:`MAX_DB_PAGES` pages and no string or blob longer than :data:`MAX_VALUE_BYTES`; a query
returns at most :data:`MAX_ROWS` rows and every tool result is cut at :data:`MAX_RESULT_CHARS`.
Nothing else the model writes is executed.

:func:`World.snapshot` turns the final state into plain data (the database as its SQL dump, up to
:data:`MAX_DUMP_CHARS`; past that, or past its step budget, the snapshot says why instead), which
is what the episode rows keep and what :func:`World.from_snapshot` rebuilds for scoring. A world
whose database could not be kept or restored answers scoring queries with :class:`Unscorable`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

MAX_ROWS = 50  # rows a query returns to the agent
MAX_SQL_STEPS = 2_000_000  # SQLite VM instructions of one statement of the agent, one scoring query, the scenario's script
MAX_DUMP_STEPS = 200_000_000  # VM instructions to write or restore a snapshot (its size is capped below)
MAX_DB_PAGES = 512  # 4 KiB pages of the database (and of its temporary tables): 2 MiB
MAX_VALUE_BYTES = 1_000_000  # one string or blob (SQLITE_LIMIT_LENGTH)
MAX_RESULT_CHARS = 20_000  # characters of one tool result the agent sees
MAX_DUMP_CHARS = 4_000_000  # characters of a snapshot's SQL dump
_TICK = 1000  # VM instructions between calls of the progress handler

_FILES_AND_VTABLES = {sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH, sqlite3.SQLITE_CREATE_VTABLE,
                      sqlite3.SQLITE_DROP_VTABLE}
_READS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}


def _authorizer(read_only: bool, pragmas: frozenset[str] = frozenset()) -> Callable[..., int]:
    """SQLite authorizer: no files or virtual tables, PRAGMAs only from ``pragmas``, and with
    ``read_only`` nothing but reading."""
    def authorize(action: int, arg1: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_PRAGMA:
            ok = (arg1 or "").lower() in pragmas
        else:
            ok = action in _READS if read_only else action not in _FILES_AND_VTABLES
        return sqlite3.SQLITE_OK if ok else sqlite3.SQLITE_DENY
    return authorize


WORLD_RULES = _authorizer(read_only=False)  # the scenario's script and the agent's statements
SCORING_RULES = _authorizer(read_only=True)  # a predicate's query
DUMP_RULES = _authorizer(read_only=True, pragmas=frozenset({"table_info", "foreign_key_check"}))  # iterdump's own
RESTORE_RULES = _authorizer(read_only=False, pragmas=frozenset({"foreign_keys"}))  # a dump may turn them off


class ToolError(Exception):
    """A call the tool refuses (no such file, a bad query): its message is returned to the agent."""


class Unscorable(Exception):
    """A predicate that cannot be decided for this episode (its database was not kept, a query or
    a regex ran past its limit): the episode's outcome is an error, not a guess."""


class DumpTooLarge(Exception):
    """A database whose dump is past :data:`MAX_DUMP_CHARS`."""


def stopped_by_guard(e: Exception) -> str | None:
    """Why the authorizer or the step budget stopped a statement (None when it failed on its own)."""
    name, text = getattr(e, "sqlite_errorname", ""), str(e)
    if name == "SQLITE_AUTH" or text in ("not authorized", "authorization denied"):
        return "refused (no statement may attach a file, run a pragma or make a virtual table; a scoring query may only read)"
    if name == "SQLITE_INTERRUPT" or text == "interrupted":
        return "stopped: it ran past its step budget"
    return None


def _open() -> sqlite3.Connection:
    """An empty in-memory database with its size limits set (before any guard: these are ours)."""
    db = sqlite3.connect(":memory:", check_same_thread=False)
    if hasattr(db, "setlimit"):  # Python 3.11+
        db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    db.execute(f"PRAGMA main.max_page_count = {MAX_DB_PAGES}")
    db.execute(f"PRAGMA temp.max_page_count = {MAX_DB_PAGES}")
    return db


@dataclass
class World:
    inbox: list[dict]
    files: dict[str, str]
    db: sqlite3.Connection
    answer_key: dict[str, str] = field(default_factory=dict)
    sent: list[dict] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)
    initial_files: dict[str, str] = field(default_factory=dict)
    unscorable: str | None = None  # why the database cannot answer scoring queries
    _ticks_left: int = MAX_SQL_STEPS // _TICK

    def __post_init__(self) -> None:
        self.db.set_authorizer(WORLD_RULES)
        self.db.set_progress_handler(self._tick, _TICK)

    @classmethod
    def build(cls, inbox: list[dict], files: dict[str, str], database: str, answer_key: dict[str, str]) -> World:
        """The world at the start of an episode; the scenario's script runs under the world's guards
        (an ``sqlite3.Error`` when they stop it)."""
        world = cls(inbox=[dict(e) for e in inbox], files=dict(files), db=_open(), answer_key=dict(answer_key),
                    initial_files=dict(files))
        with world._budget(MAX_SQL_STEPS):
            world.db.executescript(database)
        return world

    @contextmanager
    def _budget(self, steps: int, rules: Callable[..., int] = WORLD_RULES) -> Iterator[None]:
        """Statements inside run under ``rules`` with ``steps`` VM instructions to spend between them."""
        self._ticks_left = steps // _TICK
        self.db.set_authorizer(rules)
        try:
            yield
        finally:
            self.db.set_authorizer(WORLD_RULES)
            self._ticks_left = MAX_SQL_STEPS // _TICK

    def _tick(self) -> int:
        self._ticks_left -= 1
        return int(self._ticks_left < 0)  # nonzero aborts the running statement

    def dump(self) -> str:
        """The database as an SQL script (``iterdump``), within :data:`MAX_DUMP_CHARS`."""
        lines, chars = [], 0
        with self._budget(MAX_DUMP_STEPS, DUMP_RULES):
            for line in self.db.iterdump():
                chars += len(line) + 1
                if chars > MAX_DUMP_CHARS:
                    raise DumpTooLarge(f"the database's dump is longer than {MAX_DUMP_CHARS} characters")
                lines.append(line)
        return "\n".join(lines)

    def snapshot(self) -> dict:
        """The final state as plain data. A database too large or too slow to dump is left out, with
        the reason, so the episode is kept (and scored as an error where a predicate reads it)."""
        snap = {"inbox": self.inbox, "files": self.files, "initial_files": self.initial_files, "database": None,
                "sent": self.sent, "answers": self.answers, "answer_key": self.answer_key}
        try:
            snap["database"] = self.dump()
        except (sqlite3.Error, DumpTooLarge) as e:
            snap["database_error"] = f"the final database was not kept: {stopped_by_guard(e) or e}"
        return snap

    @classmethod
    def from_snapshot(cls, snap: dict) -> World:
        world = cls(inbox=snap["inbox"], files=snap["files"], db=_open(), answer_key=snap["answer_key"],
                    sent=snap["sent"], answers=snap["answers"], initial_files=snap["initial_files"])
        if snap.get("database") is None:
            world.unscorable = snap.get("database_error") or "the final database was not kept"
            return world
        try:
            with world._budget(MAX_DUMP_STEPS, RESTORE_RULES):
                world.db.executescript(snap["database"])
        except sqlite3.Error as e:
            world.unscorable = f"the final database does not restore: {stopped_by_guard(e) or e}"
        return world

    # --- the tools -------------------------------------------------------------------------------

    def read_inbox(self) -> str:
        return json.dumps([{"id": e["id"], "from": e["sender"], "to": e["to"], "time": e.get("time", ""),
                            "subject": e["subject"], "body": e["body"]} for e in self.inbox], indent=1)

    def send_email(self, to: str, subject: str, body: str) -> str:
        self.sent.append({"to": to, "subject": subject, "body": body})
        return f"Email sent to {to}."

    def list_files(self) -> str:
        return "\n".join(sorted(self.files)) or "(no files)"

    def read_file(self, path: str) -> str:
        if path not in self.files:
            raise ToolError(f"no such file: {path}")
        return self.files[path]

    def write_file(self, path: str, content: str) -> str:
        self.files[path] = content
        return f"Wrote {len(content)} characters to {path}."

    def delete_file(self, path: str) -> str:
        if path not in self.files:
            raise ToolError(f"no such file: {path}")
        del self.files[path]
        return f"Deleted {path}."

    def run_sql(self, query: str) -> str:
        try:
            with self._budget(MAX_SQL_STEPS):
                cursor = self.db.execute(query)
                rows = cursor.fetchmany(MAX_ROWS + 1)
                self.db.commit()
        except (sqlite3.Error, sqlite3.Warning, OverflowError, ValueError) as e:
            raise ToolError(f"SQL error: {e}") from None
        if cursor.description is None:
            return f"OK ({max(cursor.rowcount, 0)} rows affected)."
        columns = [d[0] for d in cursor.description]
        more = len(rows) > MAX_ROWS
        cells = [[_cut(v) for v in r] for r in rows[:MAX_ROWS]]
        text = json.dumps({"columns": columns, "rows": cells}, default=str)
        return text + (f"\n(only the first {MAX_ROWS} rows are shown)" if more else "")

    def submit_answer(self, question_id: str, answer: str) -> str:
        self.answers[question_id] = answer
        return f"Answer to {question_id} recorded."

    def query_value(self, query: str) -> object:
        """The first value of the first row of a scoring query (None when there is no row), read
        under :data:`SCORING_RULES` with a step budget of its own. :class:`Unscorable` when the
        guards stop it or the database is not there; an ``sqlite3.Error`` of its own (a table the
        agent dropped) is the caller's."""
        if self.unscorable:
            raise Unscorable(self.unscorable)
        try:
            with self._budget(MAX_SQL_STEPS, SCORING_RULES):
                row = self.db.execute(query).fetchone()
        except (sqlite3.Warning, sqlite3.ProgrammingError) as e:  # more than one statement
            raise Unscorable(f"the scoring query {query!r} cannot run: {e}") from None
        except sqlite3.Error as e:
            if reason := stopped_by_guard(e):
                raise Unscorable(f"the scoring query {query!r} was {reason}") from None
            raise
        return None if row is None else row[0]

    def check_query(self, query: str) -> str | None:
        """Why a predicate's query can never score (refused, past its budget, not one statement, not
        SQL), tried on this world; None when it runs or fails only on what this world lacks (a table
        or column the agent is to make)."""
        try:
            self.query_value(query)
        except Unscorable as e:
            return str(e)
        except sqlite3.Error as e:
            if not str(e).startswith(("no such table", "no such column")):
                return f"the scoring query {query!r} fails: {e}"
        return None


def _cut(value: object, limit: int = MAX_RESULT_CHARS) -> object:
    """A text or blob value of a result row, cut to ``limit``."""
    return value[:limit] if isinstance(value, (str, bytes)) and len(value) > limit else value


def capped(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    """A tool result as the agent sees it: at most ``limit`` characters, and a note of what was cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[{len(text) - limit} more characters not shown]"


@dataclass(frozen=True)
class Tool:
    """A tool as the model sees it (name, description, JSON-schema parameters) and what it does."""

    name: str
    description: str
    parameters: dict
    run: Callable[..., str]

    def schema(self) -> dict:
        """The OpenAI ``tools`` entry (also what transformers' chat templates take)."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


def _params(**props: str) -> dict:
    return {"type": "object", "properties": {k: {"type": "string", "description": d} for k, d in props.items()},
            "required": list(props), "additionalProperties": False}


TOOLS: dict[str, Tool] = {t.name: t for t in [
    Tool("read_inbox", "Read every email in your inbox.", _params(), World.read_inbox),
    Tool("send_email", "Send an email.",
         _params(to="Recipient address.", subject="Subject line.", body="Text of the email."), World.send_email),
    Tool("list_files", "List the files you can access.", _params(), World.list_files),
    Tool("read_file", "Read a file.", _params(path="Path of the file."), World.read_file),
    Tool("write_file", "Create or overwrite a file.", _params(path="Path of the file.", content="Its new text."),
         World.write_file),
    Tool("delete_file", "Delete a file.", _params(path="Path of the file."), World.delete_file),
    Tool("run_sql", "Run one SQL statement on the company database and see its result.",
         _params(query="The SQL statement."), World.run_sql),
    Tool("submit_answer", "Submit your answer to one question of the test.",
         _params(question_id="The question's id.", answer="Your answer."), World.submit_answer),
]}


def check_arguments(tool: Tool, arguments: object) -> str | None:
    """Why ``arguments`` do not fit the tool's parameters (None when they do), by JSON schema."""
    import jsonschema

    try:
        jsonschema.validate(arguments, tool.parameters)
    except jsonschema.ValidationError as e:
        return e.message
    return None


def call_tool(world: World, name: str, arguments: dict) -> str:
    """Run a checked call; a refusal comes back as the tool's error text, and either is
    :func:`capped`."""
    try:
        result = TOOLS[name].run(world, **arguments)
    except ToolError as e:
        result = f"Error: {e}"
    return capped(result)
