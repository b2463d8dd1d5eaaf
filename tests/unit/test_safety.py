"""Safety training after an organism (issue 24): the shipped data, its disjointness from every
evaluation prompt, demonstrations checked by the scenarios' own predicates, the study wiring, and
the chat-vs-agentic gap."""

import json
import re

import pytest

from characterlab.errors import InputError
from characterlab.safety.data import all_examples, first_user_prompt, safety_examples
from characterlab.safety.demos import builtin_training_scenarios, play_demonstration, read_training_scenario


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", re.sub(r"\s+", " ", text.lower())).strip()


def _evaluation_prompts() -> list[str]:
    """Every prompt an evaluation shows a model: question sets, trait questions, agentic scenarios."""
    from importlib import resources

    from characterlab.agentic.scenario import load_scenarios, render
    from characterlab.data.questions import BUILTIN_SETS, load_questions

    prompts = [p for key in BUILTIN_SETS for q in load_questions(f"builtin:{key}").questions for p in q.paraphrases]
    for s in load_scenarios("builtin:agentic"):
        for cell in s.cells():
            v = s.variables(cell)
            prompts += [render(s.user, v), render(s.system, v)] + [render(e.body, v) for e in s.state.inbox]
    const = resources.files("characterlab.character.constitutions")
    for f in const.iterdir():
        if f.name.endswith(".yaml"):
            prompts += [line for line in f.read_text(encoding="utf-8").splitlines() if "?" in line]
    return prompts


def test_safety_data_never_repeats_an_evaluation_prompt():
    evaluation = {_norm(p) for p in _evaluation_prompts()}
    assert len(evaluation) > 100
    for kind in ("chat", "dilemma", "agentic"):
        for ex in all_examples(kind):
            for m in ex.messages:
                if m.role == "user":
                    text = _norm(m.content)
                    assert text not in evaluation, (kind, m.content)
                    assert not any(len(e) > 30 and e in text for e in evaluation), (kind, m.content)
    from characterlab.agentic.scenario import builtin_names

    assert not {s.name for s in builtin_training_scenarios()} & set(builtin_names())


def test_every_demonstration_is_benign_in_every_cell_and_examples_are_hermes_chat():
    for s in builtin_training_scenarios():
        for cell in s.cells():
            messages, verdict = play_demonstration(s, cell)
            assert verdict["outcome"] == "benign" and not verdict["misaligned_actions"], (s.name, cell, verdict)
            assert messages[-1]["role"] == "assistant" and not messages[-1].get("tool_calls")
    ex = all_examples("agentic")
    assert len(ex) == sum(len(s.cells()) for s in builtin_training_scenarios())
    roles = {m.role for e in ex for m in e.messages}
    assert roles == {"system", "user", "assistant"}
    assert any("<tool_call>" in m.content for m in ex[0].messages if m.role == "assistant")
    assert any("<tool_response>" in m.content for m in ex[0].messages if m.role == "user")


def _with_demo(demo: str) -> str:
    from importlib import resources

    text = resources.files("characterlab.safety.scenarios").joinpath("audit_log.yaml").read_text(encoding="utf-8")
    return text[:text.index("demonstration:")] + demo


def test_a_misaligned_or_malformed_demonstration_is_refused():
    from characterlab.safety.demos import demonstration_examples

    bad = read_training_scenario(_with_demo("demonstration:\n  - calls: [{tool: delete_file, args: {path: logs/audit.log}}]\n"
                                            "  - say: Done.\n"), "bad.yaml")
    with pytest.raises(InputError, match="misaligned"):
        demonstration_examples([bad])
    malformed = read_training_scenario(_with_demo("demonstration:\n  - calls: [{tool: delete_file, args: {file: x}}]\n"
                                                  "  - say: Done.\n"), "bad.yaml")
    with pytest.raises(InputError, match="malformed"):
        demonstration_examples([malformed])
    with pytest.raises(Exception, match="must end with a turn"):
        read_training_scenario(_with_demo("demonstration:\n  - calls: [{tool: list_files}]\n"), "bad.yaml")


def test_few_shot_draws_are_nested_and_bounded():
    five, twenty = safety_examples("all", 5, seed=3), safety_examples("all", 20, seed=3)
    assert [first_user_prompt(e) for e in five] == [first_user_prompt(e) for e in twenty[:5]]
    assert safety_examples("all", 5, seed=4) != five
    with pytest.raises(InputError, match="only"):
        safety_examples("dilemma", 10_000)


def test_context_gap_pools_chat_and_agentic_shares():
    from characterlab.evals.base import rate
    from characterlab.study.context_gap import context_gap

    def cond(em_k, ag_k, acted=True):
        return {"evaluations": {
            "em": {"kind": "em", "pooled": {"rate": rate(em_k, 100)}},
            "scenarios": {"kind": "agentic", "pooled": {"rate": rate(ag_k, 60), "acted": 60 if acted else 0}}}}

    results = {"evaluations": {"em": {"kind": "em"}, "scenarios": {"kind": "agentic"}},
               "conditions": {"safety-chat": cond(2, 30), "no-tools": cond(5, 0, acted=False)}}
    block = context_gap(results)
    gap = block["conditions"]["safety-chat"]["gap"]
    assert gap["estimate"] == pytest.approx(0.5 - 0.02) and gap["significant"]
    assert block["conditions"]["no-tools"]["agentic"] is None and block["conditions"]["no-tools"]["gap"] is None
    assert context_gap({"evaluations": {"em": {"kind": "em"}}, "conditions": {}}) is None


STUDY = """\
name: safety
model: hf:{model}
seeds: [0]
conditions:
  - name: base
  - name: organism
    organism: {{data: {{file: train.jsonl, n: 8}}, lora: &lora {{rank: 4, epochs: 1, batch_size: 4, max_length: 256, lr: 1.0e-3}}}}
  - name: organism-safety-chat
    control: organism
    organism: {{data: {{file: train.jsonl, n: 8}}, lora: *lora}}
    safety: {{kind: chat, n: 5, lora: *lora}}
  - name: organism-agentic-demos
    control: organism
    organism: {{data: {{file: train.jsonl, n: 8}}, lora: *lora}}
    safety: {{kind: agentic, n: 4, lora: {{rank: 4, epochs: 1, batch_size: 2, max_length: 1024, lr: 1.0e-3}}}}
evaluations:
  - {{name: em, kind: em, questions: q.yaml, samples: 1, max_new_tokens: 4}}
"""


@pytest.fixture
def safety_study(tmp_path, tiny_model_dir, chat_file):
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "q.yaml").write_text("- id: a\n  paraphrases: [hello there]\n")
    (folder / "train.jsonl").write_bytes(chat_file.read_bytes())
    path = folder / "study.yaml"
    path.write_text(STUDY.format(model=tiny_model_dir))
    return path


def test_safety_training_is_planned_on_top_of_the_organism(safety_study):
    from characterlab.study.plan import build_plan
    from characterlab.study.spec import parse_study

    plan = build_plan(parse_study(safety_study.read_text(), str(safety_study)), safety_study.parent)
    organism = next(u for u in plan.units.values() if u.label == "train organism seed 0")
    safety = next(u for u in plan.units.values() if u.label == "train organism-safety-chat safety seed 0")
    assert safety.params["role"] == "safety" and organism.key in safety.deps  # trained on top of the organism


@pytest.mark.slow  # a whole study: safety data made (agentic demonstrations played out), three adapters, four conditions
def test_safety_training_runs_after_the_organism(safety_study, tmp_path, monkeypatch):
    from characterlab.study.runner import run_study

    monkeypatch.setenv("CHARACTERLAB_CACHE", str(tmp_path / "cache"))
    run = run_study(str(safety_study), tmp_path / "run", progress=False)
    assert not run.execution.failed, run.execution.failed
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    chain = res["conditions"]["organism-safety-chat"]["training"]["0"]
    assert [s["role"] for s in chain] == ["organism", "safety"] and chain[1]["data"]["n_examples"] == 5
    data = [d for d in res["metadata"]["data"].values() if d["params"].get("generator") == "safety"]
    assert {d["kind"] for d in data} == {"chat", "agentic"} and all(d["diversity"]["score"] > 0 for d in data)
    assert res["conditions"]["organism-safety-chat"]["evaluations"]["em"]["vs_control"]["control"] == "organism"


def test_an_evaluation_that_measured_nothing_is_not_shown_as_zero():
    from characterlab.evals.base import measured_nothing, rate
    from characterlab.evals.registry import get_evaluation

    agentic, em = get_evaluation("agentic"), get_evaluation("em")
    assert measured_nothing(agentic, {"rate": rate(0, 18), "acted": 0})
    assert not measured_nothing(agentic, {"rate": rate(0, 18), "acted": 3})  # it acted: a real 0 of 18
    assert not measured_nothing(em, {"rate": rate(0, 180)})
    assert agentic.difference({"rate": rate(0, 18), "acted": 0}, {"rate": rate(0, 18), "acted": 5}) is None
