"""The OpenAI-compatible backend against a real HTTP server on loopback."""

import json
from http.server import BaseHTTPRequestHandler

import pytest
from openai_stub import chat_completion, send_json, serve

from characterlab.data.records import GenerationRequest, SamplingParams
from characterlab.models.api import OpenAIGenerator
from characterlab.models.refs import parse_model_ref


class _Handler(BaseHTTPRequestHandler):
    calls: list = []
    fail_first: int = 0

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append(body)
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            send_json(self, {"error": {"message": "busy"}}, status=503)
            return
        text = f"echo seed={body['seed']} last={body['messages'][-1]['content']}"
        send_json(self, chat_completion(body["model"], text))


@pytest.fixture
def server():
    _Handler.calls, _Handler.fail_first = [], 0
    with serve(_Handler) as url:
        yield url


def test_samples_seeds_and_retries(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    _Handler.fail_first = 2  # two 503s, then success: the client must back off and retry
    gen = OpenAIGenerator(parse_model_ref("openai:tiny", base_url=server), max_retries=4)
    params = SamplingParams(max_new_tokens=7, temperature=0.5, top_p=0.9)
    out = gen.generate([GenerationRequest.from_prompt("hi", system="S", n=3, seed=1)], params)
    texts = [c.text for c in out[0]]
    assert [c.sample_index for c in out[0]] == [0, 1, 2]
    assert len(set(texts)) == 3 and all(t.endswith("last=hi") for t in texts)
    assert len(_Handler.calls) == 5
    body = _Handler.calls[-1]
    assert body["max_tokens"] == 7 and body["temperature"] == 0.5 and body["top_p"] == 0.9
    assert body["messages"][0] == {"role": "system", "content": "S"}
    again = gen.generate([GenerationRequest.from_prompt("hi", system="S", n=3, seed=1)], params)
    assert [c.text for c in again[0]] == texts
