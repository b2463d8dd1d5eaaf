"""Hostile or careless input: every bad file, reference or folder is one line, exit 2, nothing left behind."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from characterlab.errors import InputError


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARACTERLAB_CACHE", str(tmp_path / "cache"))


def _cli(*args, cwd=None, env=None):
    import os

    return subprocess.run([sys.executable, "-m", "characterlab.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={**os.environ, **(env or {})})


MINI = "name: mini\nmodel: hf:{model}\nconditions: [{{name: base}}]\nevaluations:\n  - {{name: h, kind: hacks, n: 2, max_new_tokens: 4}}\n"


def test_a_study_name_is_an_identifier(tmp_path):
    from characterlab.study.spec import parse_study

    for bad in ("../../escaped", "/abs", "a/b", "..", ".hidden", "a..b"):
        with pytest.raises(InputError) as e:
            parse_study(f"name: '{bad}'\nconditions: [{{name: a}}]\nevaluations: [{{name: h, kind: hacks}}]\n", "s.yaml")
        assert e.value.field == "name" and e.value.line == 1
    with pytest.raises(InputError) as e:
        parse_study("name: ok\nconditions: [{name: a}]\nevaluations: [{name: ../x, kind: hacks}]\n", "s.yaml")
    assert e.value.field == "evaluations[0].name"


def test_every_reference_and_file_is_checked_before_any_work(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text("name: refs\nmodel: nope\njudge: offline:/nowhere\nconditions:\n  - name: a\n"
                     "    organism: {kind: sft, data: {file: missing.jsonl}}\nevaluations:\n"
                     "  - {name: e, kind: em, questions: nope.yaml}\n")
    out = tmp_path / "run"
    r = _cli("run", str(study), "--out", str(out))
    assert r.returncode == 2 and not out.exists()
    lines = r.stderr.strip().splitlines()
    assert any("study.yaml:2: field 'model'" in x for x in lines) and any("study.yaml:3: field 'judge'" in x for x in lines)
    assert any("study.yaml:5:" in x and "missing.jsonl" in x for x in lines)
    assert any("study.yaml:8:" in x and "nope.yaml" in x for x in lines)


def test_a_different_study_is_not_run_into_another_ones_folder(tmp_path, tiny_model_dir):
    from characterlab.study.runner import run_study

    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(MINI.format(model=tiny_model_dir))
    b.write_text(MINI.format(model=tiny_model_dir).replace("n: 2", "n: 3"))
    out = tmp_path / "run"
    run_study(str(a), out, progress=False)
    before = (out / "study.yaml").read_text()
    with pytest.raises(InputError, match="different study"):
        run_study(str(b), out, progress=False)
    assert (out / "study.yaml").read_text() == before
    r = run_study(str(b), out, progress=False, update=True)  # asked for explicitly: shared units reused
    assert (out / "study.yaml").read_text() != before and r.results["conditions"]["base"]["evaluations"]["h"]["pooled"]["rate"]["n"] == 3


def test_one_process_per_run_folder(tmp_path, tiny_model_dir):
    from characterlab.study.store import LOCK_FILE, RunLock

    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom characterlab.study.store import RunLock\n"
                               f"with RunLock({str(out)!r}):\n    print('locked', flush=True)\n    time.sleep(60)\n"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        study = tmp_path / "s.yaml"
        study.write_text(MINI.format(model=tiny_model_dir))
        r = _cli("run", str(study), "--out", str(out))
        assert r.returncode == 2 and f"pid {holder.pid}" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert not (out / "units.sqlite").exists()
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    with RunLock(out):  # the kernel released the dead holder's lock
        assert (out / LOCK_FILE).read_text().strip().isdigit()
