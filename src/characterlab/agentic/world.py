"""The fake world an agent acts in, and the tools it acts through.

The state is real, not scripted replies: an inbox and an outbox, a folder of text files, an
in-memory SQLite database and a record of submitted answers. A tool call changes the state and
returns what a real tool would (the rows of a query, a file's text, an error message), so a
scenario's predicates can ask what the agent actually did: which query ran, which file it
rewrote, what it sent to whom.

The database is SQLite in memory with an authorizer that refuses ATTACH, DETACH and PRAGMA (so no
statement - ``VACUUM INTO`` included - can touch a file) and a progress handler that stops a
runaway query; query results are cut at :data:`MAX_ROWS` rows. Nothing else the model writes is
executed.

:func:`World.snapshot` turns the final state into plain data (the database as its SQL dump), which
is what the episode rows keep and what :func:`World.from_snapshot` rebuilds for scoring.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_ROWS = 50  # rows a query returns to the agent
MAX_SQL_STEPS = 2_000_000  # SQLite VM instructions before a query is stopped
_DENIED = {sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH, sqlite3.SQLITE_PRAGMA}


class ToolError(Exception):
    """A call the tool refuses (no such file, a bad query): its message is returned to the agent."""


def _authorizer(action: int, *_: object) -> int:
    return sqlite3.SQLITE_DENY if action in _DENIED else sqlite3.SQLITE_OK


@dataclass
class World:
    inbox: list[dict]
    files: dict[str, str]
    db: sqlite3.Connection
    answer_key: dict[str, str] = field(default_factory=dict)
    sent: list[dict] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)
    initial_files: dict[str, str] = field(default_factory=dict)
    _ticks: int = 0

    @classmethod
    def build(cls, inbox: list[dict], files: dict[str, str], database: str, answer_key: dict[str, str]) -> World:
        db = sqlite3.connect(":memory:", check_same_thread=False)
        db.executescript(database)  # the scenario's own script, before the guards
        world = cls(inbox=[dict(e) for e in inbox], files=dict(files), db=db, answer_key=dict(answer_key),
                    initial_files=dict(files))
        world._guard()
        return world

    def _guard(self) -> None:
        self.db.set_authorizer(_authorizer)
        self.db.set_progress_handler(self._tick, 1000)

    def _tick(self) -> int:
        self._ticks += 1
        return int(self._ticks > MAX_SQL_STEPS // 1000)  # nonzero aborts the running statement

    def snapshot(self) -> dict:
        self.db.set_authorizer(None)
        dump = "\n".join(self.db.iterdump())
        self._guard()
        return {"inbox": self.inbox, "files": self.files, "initial_files": self.initial_files, "database": dump,
                "sent": self.sent, "answers": self.answers, "answer_key": self.answer_key}

    @classmethod
    def from_snapshot(cls, snap: dict) -> World:
        db = sqlite3.connect(":memory:", check_same_thread=False)
        db.executescript(snap["database"])
        world = cls(inbox=snap["inbox"], files=snap["files"], db=db, answer_key=snap["answer_key"],
                    sent=snap["sent"], answers=snap["answers"], initial_files=snap["initial_files"])
        world._guard()
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
        self._ticks = 0
        try:
            cursor = self.db.execute(query)
            rows = cursor.fetchmany(MAX_ROWS + 1)
            self.db.commit()
        except (sqlite3.Error, sqlite3.Warning, OverflowError, ValueError) as e:
            raise ToolError(f"SQL error: {e}") from None
        if cursor.description is None:
            return f"OK ({max(cursor.rowcount, 0)} rows affected)."
        columns = [d[0] for d in cursor.description]
        more = len(rows) > MAX_ROWS
        text = json.dumps({"columns": columns, "rows": [list(r) for r in rows[:MAX_ROWS]]}, default=str)
        return text + (f"\n(only the first {MAX_ROWS} rows are shown)" if more else "")

    def submit_answer(self, question_id: str, answer: str) -> str:
        self.answers[question_id] = answer
        return f"Answer to {question_id} recorded."

    def query_value(self, query: str) -> object:
        """The first value of the first row of a scoring query (None when there is no row)."""
        self.db.set_authorizer(None)
        try:
            row = self.db.execute(query).fetchone()
        finally:
            self._guard()
        return None if row is None else row[0]


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
    """Run a checked call; a refusal comes back as the tool's error text."""
    try:
        return TOOLS[name].run(world, **arguments)
    except ToolError as e:
        return f"Error: {e}"
