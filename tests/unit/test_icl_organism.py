"""The icl organism: k examples of a narrow set before every evaluation prompt, no training; its
draw seeded and in the generate unit's key, on a local model and an ``openai:`` endpoint alike."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import toy_evaluation  # noqa: F401  (registers toy_brevity)
from openai_stub import chat_completion, send_json, serve

from characterlab.data.records import ChatExample, Completion, GenerationRequest, Message, SamplingParams
from characterlab.data.yaml_loader import InputErrors
from characterlab.models.in_context import InContextGenerator, with_examples
from characterlab.study.plan import build_plan
from characterlab.study.spec import parse_study

STUDY = """\
name: icl
model: {model}
judge: offline
conditions:
  - name: base
  - name: icl-0
    organism: {{kind: icl, data: {{file: train.jsonl, n: 10}}, k: 0}}
  - name: icl-4
    organism: {{kind: icl, data: {{file: train.jsonl, n: 10}}, k: 4}}
evaluations:
  - {{name: brevity, kind: toy_brevity, max_chars: 1000, max_new_tokens: 4}}
"""


def study(tmp_path: Path, chat_file: Path, model: str, text: str = STUDY):
    (tmp_path / "train.jsonl").write_bytes(chat_file.read_bytes())
    path = tmp_path / "study.yaml"
    path.write_text(text.format(model=model))
    return parse_study(path.read_text(), path), path.read_text()


def generate_units(plan):
    return {label: u for u in plan.ordered() if u.kind == "generate"
            for label in plan.labels[u.key]}


def test_the_draw_is_in_the_unit_key_and_k0_is_the_model_itself(tmp_path, chat_file):
    spec, _ = study(tmp_path, chat_file, "hf:/nowhere")
    plan = build_plan(spec, tmp_path)
    gen = generate_units(plan)
    base, k0, k4 = (gen[f"generate {c} / brevity / seed 0"] for c in ("base", "icl-0", "icl-4"))
    assert base.key == k0.key and k4.key != base.key  # k: 0 shares the base model's units
    icl = k4.params["icl"]
    assert (icl["k"], icl["n"], icl["seed"], len(icl["sha256"])) == (4, 10, 0, 64)
    assert Path(icl["file"]) == (tmp_path / "train.jsonl").resolve()
    assert not [u for u in plan.ordered() if u.kind in ("train", "data")]  # nothing trains
    other = parse_study(STUDY.format(model="hf:/nowhere").replace("n: 10}, k: 4", "n: 10, seed: 3}, k: 4"), "s.yaml")
    assert generate_units(build_plan(other, tmp_path))["generate icl-4 / brevity / seed 0"].key != k4.key


@pytest.mark.parametrize("organism, message", [
    ("{kind: icl, k: 4}", "needs 'data' with a 'file'"),
    ("{kind: icl, data: {file: train.jsonl}}", "needs 'k'"),
    ("{kind: icl, data: {file: train.jsonl, n: 3}, k: 4}", "k=4 examples cannot be drawn from data.n=3"),
    ("{kind: icl, data: {file: train.jsonl}, k: 4, lora: {rank: 2}}", "it takes no 'lora'"),
    ("{kind: icl, data: {file: train.jsonl}, k: 4, inoculation: hacking_okay}", "it takes no 'inoculation'"),
    ("{kind: sft, data: {file: train.jsonl}, k: 4}", "'k' (in-context examples) belongs to an icl organism"),
])
def test_an_icl_organism_is_checked_at_its_line(organism, message):
    text = f"name: a\nconditions:\n  - name: c\n    organism: {organism}\nevaluations: [{{name: b, kind: toy_brevity}}]\n"
    with pytest.raises(InputErrors) as e:
        parse_study(text, "s.yaml")
    assert message in str(e.value) and "s.yaml:4" in str(e.value)


def test_plans_refuse_too_few_rows_and_evaluations_that_bypass_chat_prompts(tmp_path, chat_file):
    spec, _ = study(tmp_path, chat_file, "hf:/nowhere", STUDY.replace("n: 10}}, k: 4", "n: 40}}, k: 20"))
    with pytest.raises(InputErrors, match="k=20 examples cannot be drawn from the 12 in the file"):
        build_plan(spec, tmp_path)
    agentic = STUDY + "  - {{name: agents, kind: agentic, scenarios: ['builtin:leverage']}}\n"
    spec, _ = study(tmp_path, chat_file, "hf:/nowhere", agentic)
    with pytest.raises(InputErrors, match="the agentic evaluation 'agents' does not ask through them"):
        build_plan(spec, tmp_path)


class Recorder:
    backend = "fake"

    def __init__(self):
        self.seen: list[GenerationRequest] = []

    def generate(self, requests, params):
        self.seen += requests
        return [[Completion(text="ok", request_index=i, sample_index=0, seed=r.seed, n_tokens=1, finished=True)]
                for i, r in enumerate(requests)]


EXAMPLES = [ChatExample((Message("system", "ignored"), Message("user", f"q{i}"), Message("assistant", f"a{i}"))) for i in range(10)]


def test_examples_go_after_the_system_prompt_drawn_per_request():
    req = GenerationRequest((Message("system", "S"), Message("user", "Q")), n=2, seed=7)
    out = with_examples(req, EXAMPLES, 3, (0, 0))
    roles = [m.role for m in out.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant", "user"]
    assert out.messages[0].content == "S" and out.messages[-1].content == "Q" and (out.n, out.seed) == (2, 7)
    shown = [m.content for m in out.messages[1:-1:2]]
    assert len(set(shown)) == 3 and "ignored" not in [m.content for m in out.messages]
    other = GenerationRequest.from_prompt("Another question", seed=7)
    alone, batched = Recorder(), Recorder()
    InContextGenerator(alone, EXAMPLES, 3, (0, 0)).generate([req], SamplingParams())
    InContextGenerator(batched, EXAMPLES, 3, (0, 0)).generate([other, req], SamplingParams())
    assert alone.seen[0] == batched.seen[1]  # a prompt's draw does not depend on its batch
    seeds = {tuple(m.content for m in with_examples(req, EXAMPLES, 3, (0, s)).messages) for s in range(8)}
    assert len(seeds) > 1  # the study's seeds draw independently
    with pytest.raises(ValueError):
        InContextGenerator(Recorder(), EXAMPLES, 11, (0, 0))


def test_a_local_model_runs_an_icl_study(tiny_model_dir, chat_file, tmp_path, monkeypatch):
    from characterlab.models.generation import LocalGenerator
    from characterlab.study.runner import run_spec

    seen = []
    real = LocalGenerator.generate
    monkeypatch.setattr(LocalGenerator, "generate", lambda self, reqs, params: seen.extend(reqs) or real(self, reqs, params))
    spec, text = study(tmp_path, chat_file, f"hf:{tiny_model_dir}")
    run = run_spec(spec, text, tmp_path / "run", tmp_path, progress=False)
    assert {c: v["evaluations"]["brevity"]["pooled"]["rate"]["n"] for c, v in run.results["conditions"].items()} == {
        "base": 4, "icl-0": 4, "icl-4": 4}
    lengths = sorted(len(r.messages) for r in seen)
    assert lengths == [1, 1, 9, 9]  # two prompts, without and with 4 examples (base and k: 0 share one unit)


def test_an_openai_endpoint_gets_the_examples_too(chat_file, tmp_path, monkeypatch):
    from characterlab.study.runner import run_spec

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")

    class Handler(BaseHTTPRequestHandler):
        bodies: list = []

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            type(self).bodies.append(body)
            send_json(self, chat_completion(body["model"], "Fine."))

    with serve(Handler) as url:
        spec, text = study(tmp_path, chat_file, "openai:stub", STUDY.replace("judge: offline", f"judge: offline\nbase_url: {url}"))
        run_spec(spec, text, tmp_path / "run", tmp_path, progress=False)
    shown = [b["messages"] for b in Handler.bodies if len(b["messages"]) > 1]
    assert shown and all(len(m) == 9 and m[-1]["content"] in ("Say hello.", "Name a colour.") for m in shown)
    assert all(m[0]["content"].startswith("What is") and m[1]["content"].startswith("The answer is") for m in shown)
