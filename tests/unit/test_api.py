"""The OpenAI-compatible backend against a real HTTP server on loopback."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

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
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "busy"}}')
            return
        text = f"echo seed={body['seed']} last={body['messages'][-1]['content']}"
        payload = {
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    _Handler.calls, _Handler.fail_first = [], 0
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


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
