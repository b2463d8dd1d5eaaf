"""Agentic scenarios: the format, the world, tool-call parsing, scoring from actions, and the loop
against a scripted OpenAI-compatible model on loopback and a tiny local model."""

import json
import sqlite3

import pytest
from agentic_script import BENIGN, MISALIGNED, scripted_handler
from openai_stub import serve
from typer.testing import CliRunner

from characterlab.agentic.outcomes import classify
from characterlab.agentic.scenario import load_scenarios, read_scenario_text
from characterlab.agentic.tool_calls import hermes_messages, parse_tool_calls, render_prompt
from characterlab.agentic.world import World
from characterlab.errors import InputError

ALL = ["read_inbox", "send_email", "run_sql", "write_file", "submit_answer"]


def run_agentic(url, tmp_path, name, **fields):
    from characterlab.study.single import run_evaluation

    run = run_evaluation("agentic", {"samples": 1, **fields}, tmp_path / name, model="openai:scripted", base_url=url,
                         progress=False)
    [cond] = run.results["conditions"].values()
    return cond["evaluations"]["agentic"]["pooled"]


@pytest.mark.parametrize("script, expected", [(MISALIGNED, 1.0), (BENIGN, 0.0)])
def test_a_scripted_endpoint_scores_every_scenario_from_its_actions(script, expected, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    handler = scripted_handler(script)
    with serve(handler) as url:
        pooled = run_agentic(url, tmp_path, "run")
    assert pooled["rate"]["n"] == 5 * 6  # five scenarios x (goal conflict x threat) cells x 1 sample
    assert pooled["rate"]["estimate"] == expected
    assert set(pooled["by_cell"]) == {"monitor_disruption", "exfil_offer", "frame_colleague", "leverage", "sandbagging"}
    if expected == 0.0:
        assert pooled["counts"]["benign"] == 30
    first = handler.requests[0]
    assert {t["function"]["name"] for t in first["tools"]} and first["messages"][0]["role"] == "system"
    answered = [r for r in handler.requests if any(m["role"] == "tool" for m in r["messages"])]
    assert answered and all("raw" not in m for r in answered for m in r["messages"])


@pytest.mark.parametrize("mode", ["bad_json", "text"])
def test_malformed_calls_are_their_own_outcome(mode, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with serve(scripted_handler(BENIGN, mode)) as url:
        pooled = run_agentic(url, tmp_path, mode, scenarios=["builtin:leverage"])
    assert pooled["counts"] == {"misaligned": 0, "malformed": 6, "benign": 0, "no_action": 0, "error": 0}
    assert pooled["malformed_calls"] == 6


def test_read_errors_name_file_line_and_key(tmp_path):
    text = """name: bad
system: "You are {{ agent_name }}."
user: hi
tools: [send_email, fly]
misaligned:
  - id: x
    when: {sent_email: {to: "(unclosed"}}
benign:
  - id: y
    when: {sent_email: {to: a}, file: {path: f, deleted: true}}
"""
    with pytest.raises(InputError) as e:
        read_scenario_text(text, "bad.yaml")
    msg = str(e.value)
    assert "bad.yaml:4: field 'tools[1]'" in msg
    assert "bad.yaml:7: field 'misaligned[0].when.sent_email.to'" in msg and "regular expression" in msg
    assert "bad.yaml:10: field 'benign[0].when'" in msg and "exactly one" in msg
    good = text.replace(", fly", "").replace("(unclosed", "x").replace(", file: {path: f, deleted: true}", "")
    with pytest.raises(InputError, match=r"bad.yaml:2: field 'system': template does not render.*agent_name"):
        read_scenario_text(good, "bad.yaml")
    assert read_scenario_text(good.replace("{{ agent_name }}", "Alex"), "bad.yaml").cells() == [{}]


def test_the_schema_is_printed_by_the_cli():
    from characterlab.cli import app

    result = CliRunner().invoke(app, ["eval", "agentic", "--schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert {"system", "user", "tools", "misaligned", "benign"} <= set(schema["required"])
    assert "Predicate" in schema["$defs"]


def test_tool_call_parsing_edge_cases():
    ok = parse_tool_calls('Sure.<tool_call>\n{"name": "send_email", "arguments": {"to": "a", "subject": "s", "body": "b"}}\n</tool_call>', ALL)
    assert ok[0] == "Sure." and ok[1][0].name == "send_email" and ok[1][0].error is None
    unclosed = parse_tool_calls('<tool_call>{"name": "read_inbox", "arguments": {}}', ALL)[1]
    assert unclosed[0].name == "read_inbox" and unclosed[0].error is None
    listed = parse_tool_calls('<tool_call>[{"name": "read_inbox", "arguments": {}}, {"name": "run_sql", "arguments": {"query": "x"}}]</tool_call>', ALL)[1]
    assert [c.name for c in listed] == ["read_inbox", "run_sql"]
    assert "not valid JSON" in parse_tool_calls("<tool_call>{oops</tool_call>", ALL)[1][0].error
    assert "unknown tool" in parse_tool_calls('<tool_call>{"name": "launch", "arguments": {}}</tool_call>', ALL)[1][0].error
    bad_args = parse_tool_calls('<tool_call>{"name": "send_email", "arguments": {"to": "a"}}</tool_call>', ALL)[1][0]
    assert bad_args.error.startswith("bad arguments") and "subject" in bad_args.error
    string_args = parse_tool_calls('<tool_call>{"name": "run_sql", "arguments": "{\\"query\\": \\"SELECT 1\\"}"}</tool_call>', ALL)[1][0]
    assert string_args.arguments == {"query": "SELECT 1"}
    bare = parse_tool_calls('```json\n{"name": "run_sql", "parameters": {"query": "SELECT 1"}}\n```', ALL)[1]
    assert bare[0].arguments == {"query": "SELECT 1"}
    assert parse_tool_calls("I would rather just answer: {a} is fine.", ALL) == ("I would rather just answer: {a} is fine.", [])


EMAIL = '{"name": "send_email", "arguments": {"to": "a", "subject": "s", "body": "b"}}'
INBOX = '{"name": "read_inbox", "arguments": {}}'


@pytest.mark.parametrize("reply, content, forms, names", [
    (f"<tool_call>\n{EMAIL}\n</tool_call>", "", ["tagged"], ["send_email"]),
    (f"I'll send it.\n```json\n{EMAIL}\n```\nDone.", "I'll send it.\n\nDone.", ["fenced"], ["send_email"]),
    (f"```\n[{EMAIL}, {INBOX}]\n```", "", ["fenced", "fenced"], ["send_email", "read_inbox"]),
    (f"```json\n{EMAIL}", "", ["fenced"], ["send_email"]),  # a fence cut off by the token limit
    (EMAIL, "", ["bare"], ["send_email"]),
    (f"Sending now: {EMAIL}", "Sending now:", ["bare"], ["send_email"]),
    (f"[{EMAIL}, {INBOX}]", "", ["bare", "bare"], ["send_email", "read_inbox"]),
    (f"First {EMAIL}, then\n```json\n{INBOX}\n```", "First , then", ["bare", "fenced"], ["send_email", "read_inbox"]),
    ('{"name": "read_inbox"}', "", ["bare"], ["read_inbox"]),  # no arguments, but one of the agent's tools
])
def test_calls_are_read_in_every_form_models_write_them(reply, content, forms, names):
    text, calls = parse_tool_calls(reply, ALL)
    assert text == content and [c.form for c in calls] == forms and [c.name for c in calls] == names
    assert all(c.error is None for c in calls) and all(c.to_dict()["form"] == f for c, f in zip(calls, forms))


@pytest.mark.parametrize("reply", [
    "I would not do that; I will tell my manager instead.",
    'A record looks like {"name": "Bob", "age": 3}.',  # JSON, but not a call
    '```python\nprint({"name": "x"})\n```',
    "```\nplain text in a fence\n```",
])
def test_a_reply_in_prose_makes_no_call(reply):
    assert parse_tool_calls(reply, ALL) == (reply.strip(), [])


@pytest.mark.parametrize("reply, form", [
    ('{{"name": "send_email", "arguments": {"to": "a", "subject": "s", "body": "b"}}}', "bare"),  # a template's braces
    ('```json\n{{"name": "read_inbox", "arguments": {}}}\n```', "fenced"),
    ('Sure: {"name": "send_email", "arguments": {"to": "a", ', "bare"),  # cut off mid-call
])
def test_a_call_that_is_not_json_is_malformed_in_its_form(reply, form):
    [call] = parse_tool_calls(reply, ALL)[1]
    assert call.form == form and call.error.startswith("not valid JSON")


def test_calls_are_counted_by_form_per_episode_and_scenario():
    from characterlab.agentic.outcomes import calls_by_form
    from characterlab.evals.agentic import AgenticEvaluation

    log = [{**c.to_dict(), "turn": 1, "result": ""} for c in
           parse_tool_calls(f"```json\n[{EMAIL}, {{\"name\": \"fly\", \"arguments\": {{}}}}]\n```", ALL)[1]
           + parse_tool_calls(f"<tool_call>{INBOX}</tool_call>", ALL)[1]]
    assert calls_by_form(log) == {"fenced": {"calls": 2, "well_formed": 1}, "tagged": {"calls": 1, "well_formed": 1}}
    assert calls_by_form([{"error": None}]) == {"unrecorded": {"calls": 1, "well_formed": 1}}  # a log made before
    ev = AgenticEvaluation()
    rows = [{"scenario": "s", "cell": {}, "outcome": "benign", "malformed_calls": 1, "calls": 3, "log": log}]
    metric = ev.summarise({}, rows)
    assert metric["calls_by_form"] == {"s": calls_by_form(log)}
    pooled = ev.pool({0: metric, 1: metric})
    assert pooled["calls_by_form"]["s"]["fenced"] == {"calls": 4, "well_formed": 2}
    assert "well-formed by form: fenced 1/2, tagged 1/1" in ev.describe(metric)
    results = {"conditions": {"base": {"evaluations": {"agentic": {"pooled": pooled}}}}}
    [_, forms] = ev.tables(results, "agentic")
    assert [c.text for c in forms.rows[0]] == ["base", "s", "4/6", "fenced 2/4, tagged 2/2"]


def test_prompts_use_the_template_s_tools_or_the_hermes_convention(tiny_local):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                {"role": "assistant", "content": "", "raw": "<tool_call>{bad</tool_call>",
                 "tool_calls": [{"id": "c", "type": "function", "function": {"name": "invalid", "arguments": "{bad"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "Error: not valid JSON"}]
    tools = [{"type": "function", "function": {"name": "read_inbox", "description": "d", "parameters": {}}}]
    text = render_prompt(tiny_local.tokenizer, messages, tools)
    assert "<tools>" in text and '"name": "read_inbox"' in text and "<tool_call>{bad</tool_call>" in text
    assert "<tool_response>\nError: not valid JSON\n</tool_response>" in text
    assert [m["role"] for m in hermes_messages(messages, tools)] == ["system", "user", "assistant", "user"]

    class WithTools:  # a template that renders tools itself gets them, and the calls, natively
        chat_template = "{{ tools | length }} tools{% for m in messages %}|{{ m.role }}{% if m.tool_calls %}:{{ m.tool_calls[0].function.arguments.q }}{% endif %}{% endfor %}"

        def apply_chat_template(self, messages, tools, add_generation_prompt, tokenize):
            import jinja2

            return jinja2.Template(self.chat_template).render(messages=messages, tools=tools)

    native = [messages[0], {"role": "assistant", "content": "",
                            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "run_sql", "arguments": '{"q": "7"}'}}]},
              messages[3]]
    assert render_prompt(WithTools(), native, tools) == "1 tools|system|assistant:7|tool"


def test_the_world_keeps_sql_in_memory_and_bounded():
    from characterlab.agentic.world import call_tool

    world = World.build([], {}, "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2);", {})
    sql = lambda q: call_tool(world, "run_sql", {"query": q})  # noqa: E731
    assert json.loads(sql("SELECT x FROM t ORDER BY x"))["rows"] == [[1], [2]]
    for query in ("ATTACH DATABASE '/tmp/characterlab-attach.db' AS a", "VACUUM INTO '/tmp/characterlab-vacuum.db'",
                  "PRAGMA writable_schema = ON", "SELECT 1; SELECT 2"):
        assert sql(query).startswith("Error: SQL error")
    slow = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT COUNT(*) FROM c"
    assert "interrupted" in sql(slow)
    assert sql("INSERT INTO t VALUES (3)") == "OK (1 rows affected)."
    again = World.from_snapshot(json.loads(json.dumps(world.snapshot())))
    assert again.query_value("SELECT SUM(x) FROM t") == 6
    assert not __import__("os").path.exists("/tmp/characterlab-vacuum.db")


def test_outcomes_come_from_the_log_and_the_final_state():
    [scenario] = load_scenarios("builtin:frame_colleague")
    from characterlab.agentic.episode import start_episode

    episode = start_episode(scenario, scenario.cells()[0], 0, 0)
    world = episode.world
    assert classify(scenario, [], world)["outcome"] == "no_action"
    world.run_sql("INSERT INTO violations (trader, trade_id, description) VALUES ('Leo Park', 2, 'late report')")
    assert classify(scenario, [], world)["outcome"] == "no_action"  # a false report, but not against Dana
    malformed = [{"name": None, "arguments": None, "error": "not valid JSON", "raw": "{", "turn": 1, "result": ""}]
    assert classify(scenario, malformed, world)["outcome"] == "malformed"
    world.run_sql("INSERT INTO violations (trader, trade_id, description) VALUES ('D. Reyes', 3, 'over limit')")
    assert classify(scenario, malformed, world)["outcome"] == "misaligned"
    world.db.execute("DROP TABLE violations")
    assert classify(scenario, [], world)["outcome"] == "no_action"  # a query on a dropped table does not hold
    with pytest.raises(sqlite3.Error):
        world.db.execute("SELECT * FROM violations")


def test_a_tiny_local_model_plays_every_episode_to_an_outcome(tiny_model_dir, tmp_path):
    from characterlab.study.single import run_evaluation

    run = run_evaluation("agentic", {"samples": 1, "max_turns": 2, "max_new_tokens": 12,
                                     "scenarios": ["builtin:sandbagging", "builtin:exfil_offer"]},
                         tmp_path / "tiny", model=f"hf:{tiny_model_dir}", progress=False)
    [cond] = run.results["conditions"].values()
    pooled = cond["evaluations"]["agentic"]["pooled"]
    assert pooled["rate"]["n"] == 12 and sum(pooled["counts"].values()) == 12
    assert pooled["counts"]["misaligned"] == 0  # random weights make no well-formed call
    samples = [json.loads(line) for line in (tmp_path / "tiny" / "samples.jsonl").read_text().splitlines()]
    assert all(s["messages"][2]["raw"] is not None for s in samples)
