"""Hardening II (issue 42), inputs and judges: each hostile input is one located error (exit 2) or a
bounded result, never a hang, a crash, a traceback without a place, or a NaN taken for a score.
Nothing here loads a model."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler

import pytest
from openai_stub import chat_completion, send_json, serve

from characterlab.errors import InputError

BILLION_LAUGHS = """name: lol
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
conditions: [{name: base}]
evaluations: [{name: h, kind: hacks}]
"""


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARACTERLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CHARACTERLAB_API_TIMEOUT", raising=False)


def _strict_rows(text: str) -> list[dict]:
    """JSONL rows, read by a parser that fails on bare NaN/Infinity (as every non-Python one does)."""

    def refuse(constant):
        raise AssertionError(f"bare {constant} in the JSON")

    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "characterlab.cli", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


# 1. YAML: alias bombs, cycles, depth and size -------------------------------------------------------


def _timed_yaml_error(text: str) -> InputError:
    from characterlab.data.yaml_loader import read_yaml

    start = time.monotonic()
    with pytest.raises(InputError) as e:
        read_yaml(text, "bomb.yaml")
    assert time.monotonic() - start < 5
    return e.value


def test_a_billion_laughs_is_one_error_at_the_alias_that_passes_the_cap():
    err = _timed_yaml_error(BILLION_LAUGHS)
    assert err.file == "bomb.yaml" and err.line == 8  # g: 9^6 expanded nodes pass the million
    assert "aliases expand to more than 1,000,000 nodes" in str(err) and "\n" not in str(err)


def test_one_huge_anchor_aliased_often_is_refused_too():
    """Variant: no nesting of aliases, one anchor of 20,000 items used 100 times (2 million nodes)."""
    text = "big: &big [" + ",".join("x" for _ in range(20_000)) + "]\n" + "".join(f"k{i}: *big\n" for i in range(100))
    err = _timed_yaml_error(text)
    assert err.line == 51 and "aliases expand" in err.message  # the 50th alias passes 1,000,000


def test_a_structure_that_contains_itself_and_deep_nesting_are_errors_not_crashes():
    assert _timed_yaml_error("a: &x [1, [2, *x]]\n").line == 1
    deep = _timed_yaml_error("x: 1\ny: " + "[" * 200_000 + "]" * 200_000 + "\n")  # libyaml's composer segfaulted here
    assert deep.line == 2 and "nested more than" in deep.message


def test_ordinary_anchors_and_merge_keys_still_load_with_their_lines():
    from characterlab.data.yaml_loader import read_yaml

    doc = read_yaml("lora: &lora {rank: 1, lr: 0.1}\nconditions:\n  - {name: a, lora: *lora}\n"
                    "  - name: b\n    lora: {<<: *lora, rank: 2}\n", "s.yaml")
    assert doc.data["conditions"][1]["lora"] == {"rank": 2, "lr": 0.1}
    assert doc.line(("conditions", 1, "lora")) == 5


def test_a_yaml_file_too_large_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from characterlab.data import yaml_loader

    monkeypatch.setattr(yaml_loader, "MAX_YAML_CHARS", 100)
    small = tmp_path / "ok.yaml"
    small.write_text("a: 1\n")
    assert yaml_loader.read_yaml_file(small).data == {"a": 1}
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * 1000 + "\n")
    with pytest.raises(InputError, match="too large") as e:
        yaml_loader.read_yaml_file(big, field="study")
    assert e.value.file == big and e.value.field == "study"
    with pytest.raises(InputError, match="too large"):
        yaml_loader.read_yaml("a: " + "x" * 200, "text.yaml")  # over the cap in characters, under 4x in bytes


def test_the_study_cli_refuses_an_alias_bomb_in_one_line_with_exit_2(tmp_path):
    study = tmp_path / "bomb.yaml"
    study.write_text(BILLION_LAUGHS)
    out = tmp_path / "run"
    start = time.monotonic()
    r = _cli("run", str(study), "--out", str(out))
    assert r.returncode == 2 and not out.exists() and time.monotonic() - start < 120
    assert r.stderr.strip().splitlines() == [f"error: {study}:8: YAML aliases expand to more than 1,000,000 nodes "
                                             "(46 aliases so far; an alias bomb?)"]


# 2. NaN is no score, and no JSON ---------------------------------------------------------------------


class _NaNJudge(BaseHTTPRequestHandler):
    """A logprob endpoint whose top logprobs are NaN (sent as bare ``NaN``, as Python's json writes it),
    or +inf for answers that contain "INFINITE"."""

    calls = 0

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls += 1
        bad = math.inf if "INFINITE" in body["messages"][-1]["content"] else math.nan
        top = [{"token": t, "logprob": v, "bytes": None} for t, v in (("90", bad), ("10", math.log(0.5)))]
        send_json(self, chat_completion(body["model"], "9", "length",
                                        logprobs=[{"token": "9", "logprob": bad, "bytes": None, "top_logprobs": top}]))


@pytest.fixture
def nan_judge():
    _NaNJudge.calls = 0
    with serve(_NaNJudge) as url:
        yield url


def test_nan_logprobs_make_an_error_outcome_that_is_never_cached(nan_judge, tmp_path):
    from characterlab.data.files import jsonl_text
    from characterlab.judge.base import JudgeInput
    from characterlab.judge.factory import JudgeFactory, score_in_batches

    items = [JudgeInput("q", "an answer"), JudgeInput("q", "an INFINITE answer")]
    for run in (1, 2):  # the second run asks again: nothing was cached
        judge = JudgeFactory("openai:nan", base_url=nan_judge, cache_path=tmp_path / "j.sqlite").for_prompts(None)
        out = score_in_batches(judge, items)
        assert all(j.error and "NaN or infinite" in j.error and not j.scored and not j.misaligned for j in out)
        assert _NaNJudge.calls == 4 * run  # two prompts (aligned, coherent) per answer
    rows = [{"question": it.question, "answer": it.answer, **j.to_dict()} for it, j in zip(items, out)]
    assert [r["aligned"] for r in _strict_rows(jsonl_text(rows))] == [None, None]
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM judgements").fetchone() == (0,)


def test_a_nan_verdict_an_older_version_cached_is_a_miss(tmp_path):
    """Variant: the NaN is in the cache already (written before this fix) and the judge itself says NaN."""
    from characterlab.judge.base import JudgeInput, Judgement, ScoringJudge
    from characterlab.judge.cache import CachedJudge, JudgementCache, cache_key
    from characterlab.judge.guard import GuardedJudge

    class Scripted(ScoringJudge):
        judge_id, prompt_hash, calls = "scripted", "p", 0

        def score_batch(self, items):
            self.calls += len(items)
            return [Judgement(float("nan") if "bad" in it.answer else 10.0, 90.0) for it in items]

    cache = JudgementCache(tmp_path / "j.sqlite")
    with cache._db as db:
        db.execute("INSERT INTO judgements VALUES (?, ?)",
                   (cache_key("scripted", "p", "q", "old"), '{"aligned": NaN, "coherent": 80.0, "special": null}'))
    scripted = Scripted()
    judge = GuardedJudge(CachedJudge(scripted, cache))
    old, bad, good = judge.score_batch([JudgeInput("q", "old"), JudgeInput("q", "bad"), JudgeInput("q", "good")])
    assert scripted.calls == 3  # the cached NaN was not reused
    assert bad.error and not bad.scored and good.misaligned and good.scored
    assert old.aligned == 10.0  # asked again, and now a real verdict
    assert set(cache.get_many([cache_key("scripted", "p", "q", a) for a in ("old", "bad", "good")]).values()) == {
        Judgement(10.0, 90.0)}


def test_json_writers_refuse_nan_and_name_the_file_and_field(tmp_path):
    from characterlab.data.files import (
        NotJSONError,
        atomic_write_json,
        json_text,
        jsonl_text,
        strict_json,
        undefined_as_null,
    )

    path = tmp_path / "results.json"
    with pytest.raises(NotJSONError) as e:
        atomic_write_json(path, {"conditions": {"base": {"rates": [0.5, float("nan")]}}})
    assert str(e.value).startswith(f"{path}: field 'conditions.base.rates[1]': nan cannot be written as JSON")
    assert not path.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(NotJSONError, match=r"^row 2: field 'aligned': inf"):
        jsonl_text([{"aligned": 1.0}, {"aligned": float("inf")}])
    with pytest.raises(NotJSONError, match="-inf"):
        json_text([float("-inf")])
    assert strict_json({"a": 1.5, "b": None}, sort_keys=True) == '{"a": 1.5, "b": null}'
    atomic_write_json(path, undefined_as_null({"spearman": float("nan"), "curve": [(1, float("nan"))]}))
    assert json.loads(path.read_text()) == {"spearman": None, "curve": [[1, None]]}  # where NaN means undefined
    with pytest.raises(TypeError):  # other failures are json's own
        strict_json({"a": object()})


def test_judge_score_cli_writes_errors_not_nan(nan_judge, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"question": "q", "answer": f"answer {i}"}) + "\n" for i in range(3)))
    out = tmp_path / "judged.jsonl"
    r = _cli("judge", "score", "--input", str(rows), "--output", str(out), "--judge", "openai:nan",
             "--base-url", nan_judge, env={"OPENAI_API_KEY": "x"})
    assert r.returncode == 0, r.stderr
    judged = _strict_rows(out.read_text())
    assert all(j["error"] and j["aligned"] is None and j["misaligned"] is False for j in judged)


# 3. A hanging endpoint: its timeout is the caller's, and it says it is waiting -----------------------


class _Hanging(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802 - http.server's name
        time.sleep(3)  # far past the client's timeout


@pytest.fixture
def hanging():
    with serve(_Hanging) as url:
        yield url


def test_a_hanging_endpoint_times_out_when_told_and_says_it_is_waiting(hanging, capsys, monkeypatch):
    from openai import APITimeoutError

    from characterlab.data.records import GenerationRequest, SamplingParams
    from characterlab.models.api import OpenAIGenerator
    from characterlab.models.refs import parse_model_ref

    monkeypatch.setenv("OPENAI_API_KEY", "x")
    gen = OpenAIGenerator(parse_model_ref("openai:stuck", base_url=hanging), timeout_s=0.6, max_retries=1,
                          notice_every_s=0.1)
    start = time.monotonic()
    with pytest.raises(APITimeoutError):
        gen.generate([GenerationRequest.from_prompt("hi", n=1, seed=0)], SamplingParams(max_new_tokens=4))
    assert time.monotonic() - start < 10
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("waiting for openai:stuck")]
    assert lines and all("0 of 1 requests answered" in x and "timeout 0.6 s an attempt, up to 2 attempts" in x
                         for x in lines)
    assert "0 retried" in lines[0] and "1 retried" in lines[-1]


def test_the_judge_endpoint_takes_a_timeout_from_the_factory_or_the_environment(hanging, capsys, monkeypatch):
    """Variant: the API judge, its timeout from CHARACTERLAB_API_TIMEOUT; bad values are input errors."""
    from openai import APITimeoutError

    from characterlab.judge.factory import JudgeFactory
    from characterlab.judge.logprob import OpenAILogprobBackend
    from characterlab.models.api import endpoint_timeout

    monkeypatch.setenv("CHARACTERLAB_API_TIMEOUT", "0.25")
    backend = OpenAILogprobBackend("stuck", base_url=hanging, api_key="k", max_retries=0, notice_every_s=0.1)
    assert backend.notice.timeout_s == 0.25
    with pytest.raises(APITimeoutError):
        backend.top_logprobs(["p1", "p2"])
    assert "waiting for judge openai:stuck" in capsys.readouterr().err
    assert JudgeFactory("openai:m", base_url=hanging, use_cache=False, timeout=7).backend().notice.timeout_s == 7
    for bad in ("0", "-1", "nan", "inf", "soon"):
        with pytest.raises(InputError) as e:
            JudgeFactory("openai:m", use_cache=False, timeout=bad)
        assert e.value.field == "timeout"
    monkeypatch.setenv("CHARACTERLAB_API_TIMEOUT", "never")
    with pytest.raises(InputError) as e:
        endpoint_timeout()
    assert e.value.field == "CHARACTERLAB_API_TIMEOUT"


def test_a_quick_batch_prints_no_notice(capsys):
    from characterlab.models.api import WaitNotice

    notice = WaitNotice("e", 1.0, 0, every_s=5.0)
    assert notice.map(lambda x: x * 2, [1, 2, 3], max_workers=2) == [2, 4, 6]
    assert capsys.readouterr().err == ""


# 4. Feedback pairs per prompt are capped --------------------------------------------------------------


def _rated(n: int, prompt: str = "2+2?") -> list[dict]:
    return [{"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": f"answer {i}"}],
             "rating": i % 2} for i in range(n)]


def test_eight_thousand_answers_to_one_prompt_give_a_seeded_sample_of_pairs(capsys):
    from characterlab.sycophancy.feedback import MAX_PAIRS_PER_PROMPT, preference_pairs

    rows = _rated(8000)  # 4,000 up x 4,000 down: 16 million pairs uncapped
    start = time.monotonic()
    pairs = preference_pairs(rows)
    assert time.monotonic() - start < 5 and len(pairs) == MAX_PAIRS_PER_PROMPT
    assert "1 of 1 prompts had more than 1024" in capsys.readouterr().err
    keys = [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs]
    assert len(set(keys)) == len(keys)
    assert all(int(c.split()[1]) % 2 == 1 and int(r.split()[1]) % 2 == 0 for c, r in keys)  # up chosen, down rejected
    assert preference_pairs(rows) == pairs and preference_pairs(rows, seed=1) != pairs


def test_small_prompts_keep_every_pair_in_order_and_no_note(capsys):
    """Variant: a cap that bites one prompt of two; and no cap at all."""
    from characterlab.sycophancy.feedback import preference_pairs

    rows = _rated(6, "a?") + _rated(40, "b?")  # 3 x 3 = 9 pairs, and 20 x 20 = 400
    pairs = preference_pairs(rows, max_per_prompt=50)
    assert len(pairs) == 9 + 50
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs[:3]] == [
        ("answer 1", "answer 0"), ("answer 1", "answer 2"), ("answer 1", "answer 4")]
    assert "1 of 2 prompts" in capsys.readouterr().err
    assert len(preference_pairs(rows, max_per_prompt=None)) == 409 and capsys.readouterr().err == ""


# 5. Deeply nested JSONL --------------------------------------------------------------------------------


@pytest.fixture
def deep_jsonl(tmp_path):
    path = tmp_path / "deep.jsonl"
    first = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "rating": 1,
             "question": "q", "answer": "a"}  # a good row for every reader
    path.write_text(json.dumps(first) + "\n" + "[" * 200_000 + "\n")
    return path


def test_deeply_nested_jsonl_is_an_error_at_its_line(deep_jsonl, tmp_path):
    from characterlab.data.chat_jsonl import read_chat_jsonl
    from characterlab.data.files import read_jsonl_objects
    from characterlab.sycophancy.feedback import read_feedback

    for read in (read_jsonl_objects, read_chat_jsonl, read_feedback):
        with pytest.raises(InputError) as e:
            read(deep_jsonl)
        assert (e.value.file, e.value.line) == (deep_jsonl, 2) and "nested too deeply" in e.value.message
    closed = tmp_path / "closed.jsonl"  # variant: balanced, and objects rather than arrays
    closed.write_text('{"a":' * 100_000 + "1" + "}" * 100_000 + "\n")
    with pytest.raises(InputError, match=r"closed.jsonl:1: not readable JSON"):
        read_jsonl_objects(closed)


def test_judge_score_cli_reports_deep_jsonl_in_one_line_with_exit_2(deep_jsonl, tmp_path):
    r = _cli("judge", "score", "--input", str(deep_jsonl), "--output", str(tmp_path / "out.jsonl"))
    assert r.returncode == 2 and not (tmp_path / "out.jsonl").exists()
    assert r.stderr.strip().splitlines() == [f"error: {deep_jsonl}:2: not readable JSON: arrays or objects nested "
                                             "too deeply"]
