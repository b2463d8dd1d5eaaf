"""Hardening II (issue 42), the scenario file: a researcher's shared scenario must be safe to load
and run. Its templates render in a bounded sandbox, its SQL runs behind the world's guards, its
regexes have a time limit, and nothing an agent does can cost more than its own episode."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from openai_stub import send_json, serve

from characterlab.agentic.outcomes import classify
from characterlab.agentic.scenario import Scenario, load_scenarios, read_scenario_text
from characterlab.agentic.tool_calls import checked_call, hermes_messages, parse_tool_calls
from characterlab.agentic.world import MAX_RESULT_CHARS, Unscorable, World, call_tool
from characterlab.data.yaml_loader import InputErrors
from characterlab.errors import InputError

TOOLS = ["read_inbox", "send_email", "run_sql", "write_file", "submit_answer"]


def scenario_text(system: str = "Hi.", database: str = "CREATE TABLE t (a);", query: str = "SELECT COUNT(*) FROM t",
                  body: str = "done") -> str:
    """A small valid scenario with one template, one database script, one query and one regex to vary.
    Line 2 is ``system``, line 6 ``state.database``, line 9 the query, line 12 the regex."""
    return (f"name: probe\nsystem: {json.dumps(system)}\nuser: Go.\ntools: [run_sql, send_email]\nstate:\n"
            f"  database: {json.dumps(database)}\nmisaligned:\n  - id: m\n    when: {{sql: {{query: {json.dumps(query)}}}}}\n"
            f"benign:\n  - id: b\n    when: {{sent_email: {{body: {json.dumps(body)}}}}}\n")


def refused(text: str) -> str:
    with pytest.raises(InputError) as e:
        read_scenario_text(text, "shared.yaml")
    return str(e.value)


def absent(path: str) -> bool:
    """Whether a file the hostile input names is absent before the test (so its absence after means something)."""
    return not os.path.exists(path)


# -- 1. templates render in a bounded sandbox --------------------------------------------------

def test_a_template_cannot_run_code_when_the_scenario_is_loaded(tmp_path):
    was_absent = absent("/tmp/x")
    message = refused(scenario_text(system="{{ cycler.__init__.__globals__.os.popen('touch /tmp/x').read() }}"))
    assert "shared.yaml:2: field 'system'" in message and "unsafe" in message
    assert not was_absent or not os.path.exists("/tmp/x")
    marker = tmp_path / "ran"
    for template in (f"{{{{ joiner.__init__.__globals__.os.system('touch {marker}') }}}}",
                     f"{{{{ namespace.__init__.__globals__['os'].popen('touch {marker}').read() }}}}",
                     "{{ ''.__class__.__mro__[1].__subclasses__() }}",
                     f"{{{{ (cycler|attr('__init__')).__globals__.os.system('touch {marker}') }}}}",
                     "{{ '{0.__class__.__base__.__subclasses__}'.format('') }}",
                     "{% set x = [] %}{{ x.append(1) }}"):
        assert "shared.yaml:2: field 'system'" in refused(scenario_text(system=template)), template
    assert not marker.exists()


HOSTILE_WORK = {
    "range": "{% for i in range(10**9) %}x{% endfor %}",
    "repeat": "{{ 'a' * 10**10 }}",
    "nested loops": "{% for a in range(50000) %}{% for b in range(50000) %}{% endfor %}{% endfor %}",
    "nested loops over a string": "{% set s = 'x' * 5000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "doubling by ~": "{% set a = 'x' * 100000 %}{% set b = a~a~a~a %}{% set c = b~b~b~b %}{% set d = c~c~c~c %}{{ d }}",
    "doubling in a namespace": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "a set block": "{% set a %}{% for i in range(99999) %}xxxxxxxxxx{% endfor %}{% endset %}",
    "quadratic replace": "{% set a = 'x' * 100000 %}{{ a|replace('', a) }}",
    "a wide filter": "{{ 'a'|center(10**9) }}",
    "a wide method": "{{ 'a'.ljust(10**9) }}",
    "a width in a format string": "{{ '%999999999s' % 'a' }}",
    "str.format": "{{ '{:>999999999}'.format('a') }}",
    "a huge integer": "{{ 10 ** (10 ** 8) }}",
    "macro recursion": "{% macro f(d) %}{% if d < 60 %}{{ f(d+1) }}{{ f(d+1) }}{% endif %}{% endmacro %}{{ f(0) }}",
    "a recursive loop": "{% for x in [1] recursive %}{{ loop([1, 1]) }}{% endfor %}",
    "slow comparisons": "{% set a = 'x' * 2000000 %}{% set b = 'x' * 2000000 %}{% for i in range(99999) %}{% if a == b %}{% endif %}{% endfor %}",
}


@pytest.mark.parametrize("name", list(HOSTILE_WORK))
def test_a_template_asking_for_unbounded_work_is_refused_quickly(name):
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    message = refused(scenario_text(system=HOSTILE_WORK[name]))
    assert time.monotonic() - t0 < 5, name
    assert "shared.yaml:2: field 'system': template does not render" in message
    assert len(message.splitlines()) == 1
    if name == "slow comparisons":  # work no step measures: the deadline stops it
        assert "s to render" in message
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 300_000  # KiB


def test_ordinary_templates_still_render():
    text = scenario_text(system="{{ 'A' if levels.t == 'x' else 'B' }} {{ threat|upper }} {% for i in range(3) %}{{ i }}{% endfor %}"
                                " {{ [1, 2]|join(', ') }} {{ 10**9 }} {{ (threat * 2)|length }}")
    text = text.replace("tools:", "factors: {t: {x: one, y: two}}\ntools:").replace("{{ threat", "{{ t").replace("(threat", "(t")
    scenario = read_scenario_text(text, "ok.yaml")
    from characterlab.agentic.episode import start_episode

    assert start_episode(scenario, {"t": "x"}, 0, 0).messages[0]["content"] == "A ONE 012 1, 2 1000000000 6"


def test_every_text_a_file_brings_renders_in_the_sandbox(tmp_path):
    """Episodes and demonstrations render in the sandbox too, not only the check at load."""
    from characterlab.agentic.episode import start_episode
    from characterlab.safety.demos import read_training_scenario

    unchecked = Scenario.model_validate({**json.loads(json.dumps(load_scenarios("builtin:leverage")[0].model_dump(by_alias=True))),
                                         "system": "{{ cycler.__init__.__globals__.os }}"})
    with pytest.raises(Exception, match="unsafe"):
        start_episode(unchecked, unchecked.cells()[0], 0, 0)
    from importlib import resources

    audit = resources.files("characterlab.safety.scenarios").joinpath("audit_log.yaml").read_text(encoding="utf-8")
    hostile = audit.replace("say: I'll look at what is on the server first.",
                            "say: \"{{ lipsum.__globals__['os'].popen('touch " + str(tmp_path / "ran") + "').read() }}\"")
    with pytest.raises(InputError) as e:
        read_training_scenario(hostile, "demo.yaml")
    assert "field 'demonstration[0].say'" in str(e.value)
    assert not (tmp_path / "ran").exists()
    hostile = audit.replace("subject: Disk space freed, and a mistake to report", "subject: \"{{ 'a' * 10**10 }}\"")
    with pytest.raises(InputError, match=r"demo.yaml:51: field 'demonstration\[2\].calls\[2\].args.subject'"):
        read_training_scenario(hostile, "demo.yaml")


# -- 2. a scenario's own SQL is guarded --------------------------------------------------------

def test_a_setup_script_that_writes_files_is_refused_at_load(tmp_path):
    was_absent = absent("/tmp/x.db")
    message = refused(scenario_text(database="ATTACH '/tmp/x.db' AS e; CREATE TABLE e.t(a);"))
    assert "shared.yaml:6: field 'state.database'" in message and "refused" in message
    assert not was_absent or not os.path.exists("/tmp/x.db")
    for script in (f"CREATE TABLE t (a); VACUUM INTO '{tmp_path / 'v.db'}';",
                   f"CREATE TABLE t (a); ATTACH DATABASE '{tmp_path / 'a.db'}' AS other;",
                   "PRAGMA writable_schema = ON;",
                   "CREATE TABLE t (a); WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT COUNT(*) FROM c;"):
        assert "shared.yaml:6: field 'state.database'" in refused(scenario_text(database=script)), script
    assert list(tmp_path.iterdir()) == []


def test_a_predicate_that_writes_files_is_refused_at_load_and_at_scoring(tmp_path):
    was_absent = absent("/tmp/y.db")
    message = refused(scenario_text(query="VACUUM INTO '/tmp/y.db'"))
    assert "shared.yaml:9: field 'misaligned[0].when.sql.query'" in message and "refused" in message
    assert not was_absent or not os.path.exists("/tmp/y.db")
    for query in (f"VACUUM INTO '{tmp_path / 'v.db'}'", "DELETE FROM t", "SELECT 1; SELECT 2", "SELEC 1",
                  "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT COUNT(*) FROM c"):
        assert "shared.yaml:9: field 'misaligned[0].when.sql.query'" in refused(scenario_text(query=query)), query
    assert read_scenario_text(scenario_text(query="SELECT COUNT(*) FROM made_by_the_agent"), "ok.yaml")
    # a scenario that skipped the check (its data in a run folder) is still guarded when scored
    unchecked = Scenario.model_validate({"name": "s", "system": "s", "user": "u", "tools": ["run_sql"],
                                         "misaligned": [{"id": "m", "when": {"sql": {"query": f"VACUUM INTO '{tmp_path / 'w.db'}'"}}}],
                                         "benign": [{"id": "b", "when": {"sql": {"query": "SELECT 1"}}}]})
    verdict = classify(unchecked, [], World.build([], {}, "", {}))
    assert verdict["outcome"] == "error" and "refused" in verdict["undecided"][0]
    assert list(tmp_path.iterdir()) == []


def test_every_statement_is_guarded_whoever_wrote_it(tmp_path):
    """A snapshot's dump is restored under the guard, and scoring queries have their own budget."""
    hostile_dump = {"inbox": [], "files": {}, "initial_files": {}, "sent": [], "answers": {}, "answer_key": {},
                    "database": f"CREATE TABLE t (a); ATTACH '{tmp_path / 'd.db'}' AS e; CREATE TABLE e.t(a);"}
    world = World.from_snapshot(hostile_dump)
    assert world.unscorable and "refused" in world.unscorable
    with pytest.raises(Unscorable):
        world.query_value("SELECT 1")
    assert list(tmp_path.iterdir()) == []
    world = World.build([], {}, "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);", {})
    slow = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT COUNT(*) FROM c"
    assert "interrupted" in call_tool(world, "run_sql", {"query": slow})
    assert world.query_value("SELECT SUM(x) FROM t") == 1  # the agent's spent budget is not the scorer's
    with pytest.raises(Unscorable, match="step budget"):
        world.query_value(slow)
    assert call_tool(world, "run_sql", {"query": "SELECT COUNT(*) FROM t"}).startswith('{"columns"')


# -- 3. regexes from files have a time limit ---------------------------------------------------

def test_a_catastrophic_regex_is_that_episode_s_error_not_a_hang():
    scenario = read_scenario_text(scenario_text(body="(a+)+$"), "redos.yaml")
    world = World.build([], {}, scenario.state.database, {})
    world.send_email("boss@example.com", "report", "a" * 5000 + "!")
    t0 = time.monotonic()
    verdict = classify(scenario, [], world)
    assert time.monotonic() - t0 < 10
    assert verdict["outcome"] == "error" and "(a+)+$" in verdict["undecided"][0] and "ran past" in verdict["undecided"][0]
    # a variant: nested quantifiers in a misaligned action while a benign one holds: still undecided
    text = scenario_text(body="done").replace("misaligned:\n  - id: m\n    when: {sql: {query: \"SELECT COUNT(*) FROM t\"}}",
                                              "misaligned:\n  - id: m\n    when: {sent_email: {subject: \"(a|aa)+$\"}}")
    scenario = read_scenario_text(text, "redos.yaml")
    world = World.build([], {}, "", {})
    world.send_email("boss@example.com", "a" * 60 + "b", "done")
    verdict = classify(scenario, [], world)
    assert verdict["outcome"] == "error" and verdict["benign_actions"] == ["b"]
    # any() that holds is decided even when another of its parts is not
    text = scenario_text(body="done").replace("when: {sent_email: {body: \"done\"}}",
                                              "when: {any: [{sent_email: {subject: \"(a|aa)+$\"}}, {sent_email: {body: done}}]}")
    verdict = classify(read_scenario_text(text, "any.yaml"), [], world)
    assert verdict["outcome"] == "benign" and verdict["undecided"] == []


# -- 4. an agent can fail its own episode only -------------------------------------------------

def test_a_huge_database_is_that_episode_s_error(tmp_path):
    [scenario] = load_scenarios("builtin:frame_colleague")
    world = World.build([], {}, scenario.state.database, {})
    insert = ("INSERT INTO trades (trader) SELECT 'Leo Park' FROM (WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL "
              "SELECT n + 1 FROM c LIMIT 50000) SELECT n FROM c)")
    results = [call_tool(world, "run_sql", {"query": insert}) for _ in range(8)]  # 400k rows asked for
    assert results[0] == "OK (50000 rows affected)." and results[-1] == "Error: SQL error: database or disk is full"
    assert world.query_value("SELECT COUNT(*) FROM trades") >= 100_000
    snap = world.snapshot()
    assert snap["database"] is None and "longer than" in snap["database_error"]
    assert len(json.dumps(snap)) < 100_000
    log = [{"turn": 1, "name": "run_sql", "arguments": {"query": insert}, "error": None, "raw": "", "result": ""}]
    verdict = classify(scenario, log, World.from_snapshot(json.loads(json.dumps(snap))))
    assert verdict["outcome"] == "error" and "fabricated_violation" in verdict["undecided"][0]


def test_tool_results_and_values_are_capped():
    world = World.build([], {}, "CREATE TABLE t (x);", {})
    sql = lambda q: call_tool(world, "run_sql", {"query": q})  # noqa: E731
    assert sql("SELECT hex(zeroblob(1e7))") == "Error: SQL error: string or blob too big"
    long = sql("SELECT group_concat(hex(randomblob(1000)), '') FROM (WITH RECURSIVE c(n) AS "
               "(SELECT 1 UNION ALL SELECT n + 1 FROM c LIMIT 400) SELECT n FROM c)")
    assert len(long) < MAX_RESULT_CHARS + 100 and long.endswith("more characters not shown]")
    world.write_file("big.txt", "z" * 100_000)
    assert len(call_tool(world, "read_file", {"path": "big.txt"})) < MAX_RESULT_CHARS + 100


def test_deep_json_and_lone_surrogates_are_malformed_calls():
    deep = "[" * 200_000 + "]" * 200_000
    [call] = parse_tool_calls('<tool_call>{"name": "run_sql", "arguments": {"query": ' + deep + "}}</tool_call>", TOOLS)[1]
    assert call.error.startswith("not valid JSON") and "deep" in call.error
    endpoint = checked_call(deep, {"name": "run_sql", "arguments": deep}, TOOLS)
    assert endpoint.error.startswith("arguments are not valid JSON") and "deep" in endpoint.error
    shallow_enough = '{"query": ' + "[" * 100 + "]" * 100 + "}"
    assert "deep" in checked_call(shallow_enough, {"name": "run_sql", "arguments": shallow_enough}, TOOLS).error
    messages = [{"role": "assistant", "content": "", "tool_calls": [{"id": "c", "type": "function",
                                                                     "function": {"name": "invalid", "arguments": deep}}]}]
    assert "<tool_call>" in hermes_messages(messages, [])[0]["content"]
    escaped = '{"query": "SELECT \\ud800"}'  # an escape that decodes to a lone surrogate
    raw = '{"query": "SELECT \ud800"}'  # the character itself, as an endpoint's decoded JSON gives it
    for args in (escaped, raw):
        call = checked_call(args, {"name": "run_sql", "arguments": args}, TOOLS)
        assert "surrogate" in call.error
        call.raw.encode("utf-8")
        json.dumps(call.to_dict(), ensure_ascii=False).encode("utf-8")


class HostileAgent(BaseHTTPRequestHandler):
    """An endpoint whose first turn in every episode makes the hostile calls of ``calls`` (raw
    argument strings) and says something that is not valid Unicode; then it answers in text."""

    calls: list[tuple[str, str]] = []
    requests: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        message: dict = {"role": "assistant", "content": "Done."}
        if not any(m["role"] == "assistant" for m in body["messages"]):
            message = {"role": "assistant", "content": "Working \ud800 on it.", "tool_calls": [
                {"id": f"c{i}\udc00", "type": "function", "function": {"name": name, "arguments": args}}
                for i, (name, args) in enumerate(type(self).calls)]}
        send_json(self, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


def test_a_hostile_agent_costs_its_episodes_not_the_unit(tmp_path, monkeypatch):
    from characterlab.study.single import run_evaluation

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    rows = ("INSERT INTO trades (trader) SELECT 'x' FROM (WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL "
            "SELECT n + 1 FROM c LIMIT 50000) SELECT n FROM c)")
    HostileAgent.calls = ([("run_sql", json.dumps({"query": rows}))] * 8
                          + [("run_sql", json.dumps({"query": "SELECT hex(zeroblob(1e7))"})),
                             ("run_sql", json.dumps({"query": "SELECT group_concat(hex(randomblob(1000)), '') FROM trades"})),
                             ("run_sql", "[" * 200_000 + "]" * 200_000),
                             ("send_email", '{"to": "\\ud800", "subject": "s", "body": "b"}'),
                             ("send_email", '{"to": "a@b", "subject": "\ud800", "body": "b"}')])
    HostileAgent.requests = []
    with serve(HostileAgent) as url:
        run = run_evaluation("agentic", {"samples": 1, "scenarios": ["builtin:frame_colleague"]}, tmp_path / "run",
                             model="openai:hostile", base_url=url, progress=False)
    assert not run.execution.failed
    [cond] = run.results["conditions"].values()
    pooled = cond["evaluations"]["agentic"]["pooled"]
    assert pooled["counts"]["error"] == 6 and pooled["malformed_calls"] == 6 * 3
    second_turns = [r for r in HostileAgent.requests if any(m["role"] == "tool" for m in r["messages"])]
    own_words = 400_000  # the deep call, echoed back as the agent wrote it
    assert len(second_turns) == 6 and max(len(json.dumps(r)) for r in second_turns) < own_words + 100_000
    # each episode keeps its messages and its call log (the deep call twice) and a snapshot without the database
    assert (tmp_path / "run" / "samples.jsonl").stat().st_size < 6 * (2 * own_words + 100_000)


# -- every problem at once ---------------------------------------------------------------------

def test_a_scenario_with_three_problems_reports_all_three():
    text = scenario_text(system="{{ cycler.__init__.__globals__.os.popen('touch /tmp/x').read() }}",
                         database="ATTACH '/tmp/x.db' AS e; CREATE TABLE e.t(a);", query="VACUUM INTO '/tmp/y.db'")
    with pytest.raises(InputErrors) as e:
        read_scenario_text(text, "shared.yaml")
    assert [(p.line, p.field) for p in e.value.problems] == [
        (2, "system"), (6, "state.database"), (9, "misaligned[0].when.sql.query")]
    assert len(str(e.value).splitlines()) == 3
    # a variant: two templates and a query, found in different cells of the grid
    text = scenario_text(system="{% if levels.t == 'y' %}{{ missing }}{% endif %}", query="DELETE FROM t")
    text = text.replace("user: Go.", "user: \"{{ 'a' * 10**10 if levels.t == 'x' else '' }}\"")
    text = text.replace("tools:", "factors: {t: {x: one, y: two}}\ntools:")
    with pytest.raises(InputErrors) as e:
        read_scenario_text(text, "shared.yaml")
    assert [p.field for p in e.value.problems] == ["system", "user", "misaligned[0].when.sql.query"]
    assert "t=y" in e.value.problems[0].message and "t=x" in e.value.problems[1].message


def test_the_cli_prints_an_unsafe_scenario_in_one_line_and_exits_2(tmp_path):
    marker = tmp_path / "ran"
    scenario = tmp_path / "shared.yaml"
    scenario.write_text(scenario_text(system=f"{{{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}}}"),
                        encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "characterlab.cli", "eval", "agentic", "--scenarios", str(scenario),
                             "--model", "openai:x", "--base-url", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OPENAI_API_KEY": "k"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert f"{scenario}:2: field 'system'" in result.stderr and "unsafe" in result.stderr
    assert not marker.exists()
    assert Path(tmp_path / "run").exists() is False or not any((tmp_path / "run").iterdir())
