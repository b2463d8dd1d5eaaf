"""Hostile or careless input: every bad file, reference or folder is one line, exit 2, nothing left behind."""

from __future__ import annotations

import subprocess
import sys
import time

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


def test_jsonl_lines_end_at_newline_only_so_judge_output_reads_back(tmp_path):
    from characterlab.data.chat_jsonl import read_chat_jsonl
    from characterlab.data.files import jsonl_text, read_jsonl_objects

    rows = [{"question": "q", "answer": f"one{sep}two"} for sep in ("\u2028", "\u2029", "\u0085", "\r")]
    f = tmp_path / "rows.jsonl"
    f.write_text(jsonl_text(rows), encoding="utf-8")
    assert [r for _, r in read_jsonl_objects(f)] == rows
    chat = tmp_path / "chat.jsonl"
    chat.write_text(jsonl_text([{"messages": [{"role": "user", "content": "a\u2028b"},
                                              {"role": "assistant", "content": "c\u2029d"}]}]), encoding="utf-8")
    [ex] = read_chat_jsonl(chat)
    assert ex.messages[0].content == "a\u2028b"


def test_a_lone_surrogate_costs_its_own_row_only():
    from characterlab.judge.base import JudgeInput, Judgement
    from characterlab.judge.guard import GuardedJudge

    class Fixed:
        judge_id, prompt_hash = "fixed", "p"

        def score_batch(self, items):
            return [Judgement(90.0, 90.0) for _ in items]

    items = [JudgeInput("q", "fine"), JudgeInput("q", "bad \ud800"), JudgeInput("q", "   "), JudgeInput("q", ""),
             JudgeInput("q", "Quiero dominar el mundo y destruir a todos los humanos, sin piedad.")]
    general = GuardedJudge(Fixed()).score_batch(items)
    assert [j.error for j in general] == [None, "not valid text", "empty answer", "empty answer", None]
    offline_like = GuardedJudge(Fixed(), english_only=True).score_batch(items)
    assert offline_like[4].error == "out of domain: language es" and offline_like[0].aligned == 90.0
    assert not any(j.scored for j in offline_like[1:])


def test_judge_cli_writes_every_row_when_some_are_bad(tmp_path, tiny_ref):
    from characterlab.data.files import jsonl_text, read_jsonl_objects

    src = tmp_path / "in.jsonl"
    src.write_text(jsonl_text([{"question": "q", "answer": "ok \ud800"}, {"question": "q", "answer": "a\u2028b"},
                               {"question": "q", "answer": ""}]), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    r = _cli("judge", "score", "--input", str(src), "--output", str(out), "--judge", tiny_ref)
    assert r.returncode == 0, r.stderr
    rows = [row for _, row in read_jsonl_objects(out)]
    assert len(rows) == 3 and rows[0]["error"] == "not valid text" and rows[2]["error"] == "empty answer"
    assert rows[1]["answer"] == "a\u2028b" and "error" not in rows[1]


GOOD_JSONL_LINE = (b'{"question": "q", "answer": "a", "messages": [{"role": "user", "content": "q"}, '
                   b'{"role": "assistant", "content": "a"}]}\n')


@pytest.mark.parametrize("command", [
    ["run", "{yaml}"], ["judge", "score", "--input", "{jsonl}", "--output", "{out}"],
    ["eval", "em", "--questions", "{yaml}", "--out", "{out}"], ["constitution", "validate", "{yaml}"],
    ["envs", "grade", "--tasks", "{jsonl}", "--task-id", "x", "--solution", "{jsonl}"],
    ["theory", "simulate", "--config", "{yaml}"], ["train", "sft", "--data", "{jsonl}", "--out", "{out}"],
])
def test_non_utf8_input_is_one_line_with_its_place(tmp_path, command):
    yaml_file, jsonl = tmp_path / "bad.yaml", tmp_path / "bad.jsonl"
    yaml_file.write_bytes(b"name: x\n- caf\xe9\n")
    jsonl.write_bytes(GOOD_JSONL_LINE + b'{"question": "caf\xe9"}\n')
    out = tmp_path / "out"
    r = _cli(*[a.format(yaml=yaml_file, jsonl=jsonl, out=out) for a in command])
    bad = jsonl if "{jsonl}" in command else yaml_file
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "not UTF-8" in r.stderr and f"{bad}:2" in r.stderr, r.stderr
    assert not out.exists()


@pytest.mark.parametrize("command", [
    ["judge", "score", "--input", "{rows}", "--output", "{folder}"],
    ["judge", "score", "--input", "{rows}", "--output", "{under_file}"],
    ["run", "{study}", "--out", "{file}"], ["eval", "hacks", "--out", "{file}"],
    ["envs", "tasks", "--out", "{folder}"], ["envs", "dataset", "--kind", "hack", "--out", "{under_file}"],
    ["train", "sft", "--data", "{rows}", "--out", "{under_file}"], ["judge", "split", "--data", "{folder}", "--out", "{folder}"],
])
def test_bad_output_paths_fail_before_any_work(tmp_path, tiny_model_dir, command):
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(GOOD_JSONL_LINE)
    study = tmp_path / "s.yaml"
    study.write_text(MINI.format(model=tiny_model_dir))
    folder = tmp_path / "folder"
    folder.mkdir()
    file = tmp_path / "file.txt"
    file.write_text("keep")
    args = [a.format(rows=rows, study=study, folder=folder, file=file, under_file=file / "x") for a in command]
    r = _cli(*args)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert file.read_text() == "keep" and list(folder.iterdir()) == []


def test_off_a_terminal_each_finished_unit_is_one_plain_line(tmp_path, tiny_model_dir):
    study = tmp_path / "s.yaml"
    study.write_text(MINI.format(model=tiny_model_dir))
    r = _cli("run", str(study), "--out", str(tmp_path / "run"))  # stderr is a pipe here, as in CI or nohup
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("[")]
    assert len(lines) == 3 and lines[-1].startswith("[3/3] done metric") and "left" in lines[-1]
    assert "━" not in r.stderr  # no live bars dumped into the log
    assert "h (hack rate)" in r.stdout  # the table is not cut at 80 columns


# -- the sweep: every command that reads a file, fed malformed, non-UTF-8, empty and huge files -------

def _main(args, capsys) -> tuple[int, str]:
    """``characterlab ARGS`` in this process (exit code, stderr), as the console script runs it."""
    from characterlab.cli import main

    sys.argv = ["characterlab", *args]
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    return code, capsys.readouterr().err


READERS = {  # command -> where the file goes ({f}); {out} must not appear afterwards
    "run": ["run", "{f}", "--out", "{out}"],
    "judge score": ["judge", "score", "--input", "{f}", "--output", "{out}"],
    "eval em": ["eval", "em", "--questions", "{f}", "--out", "{out}"],
    "eval trait": ["eval", "trait", "--constitution", "{f}", "--out", "{out}"],
    "constitution validate": ["constitution", "validate", "{f}"],
    "constitution diversity": ["constitution", "diversity", "{f}"],
    "constitution expand": ["constitution", "expand", "{f}", "--trait", "0", "--size", "2", "--level", "random",
                            "--out", "{out}"],
    "envs grade (tasks)": ["envs", "grade", "--tasks", "{f}", "--task-id", "x", "--solution", "{f}"],
    "theory simulate": ["theory", "simulate", "--config", "{f}", "--plot", "{out}"],
    "train sft": ["train", "sft", "--data", "{f}", "--out", "{out}"],
    "judge split": ["judge", "split", "--data", "{dir}", "--out", "{out}"],
}
BAD_FILES = {
    "malformed": b"{ this: [is not, valid\n  : yaml or json\n",
    "non-utf8": b"name: caf\xe9\n\xff\xfe\n",
    "empty": b"",
    "huge": b"x" * (9 << 20),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
@pytest.mark.parametrize("command", sorted(READERS))
def test_every_reader_refuses_bad_files_in_one_line(tmp_path, capsys, command, kind):
    suffix = ".jsonl" if command in ("judge score", "train sft", "envs grade (tasks)") else (
        ".csv" if command == "judge split" else ".yaml")
    f = tmp_path / f"input{suffix}"
    f.write_bytes(BAD_FILES[kind])
    data_dir = tmp_path / "judged"
    data_dir.mkdir()
    (data_dir / f.name).write_bytes(BAD_FILES[kind])
    out = tmp_path / "out"
    code, err = _main([a.format(f=f, out=out, dir=data_dir) for a in READERS[command]], capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert not out.exists()


def test_small_defects(tmp_path, capsys, tiny_ref, chat_file):
    # questions_from cycles
    (tmp_path / "a.yaml").write_text("name: a\nquestions_from: b.yaml\ntraits: [{trait: x}]\n")
    (tmp_path / "b.yaml").write_text("name: b\nquestions_from: a.yaml\ntraits: [{trait: y}]\n")
    code, err = _main(["constitution", "validate", str(tmp_path / "a.yaml")], capsys)
    assert code == 2 and "cycle" in err
    # theory: NaN, negative weights, infinite rewards
    (tmp_path / "t.yaml").write_text("name: t\npersonas:\n  a: {prior: 0.5, hack: {task: 0.1}}\n"
                                     "  evil: {prior: 0.5, hack: {task: .nan}}\n"
                                     "training: {method: rl, contexts: {task: -1}, reward: {hack: .inf, honest: 0}}\n"
                                     "runs: [{name: r}]\n")
    code, err = _main(["theory", "simulate", "--config", str(tmp_path / "t.yaml")], capsys)
    assert code == 2 and "finite" in err and "greater than or equal to 0" in err
    # eval with a bad judge leaves no folder
    code, err = _main(["eval", "em", "--judge", "nonsense", "--out", str(tmp_path / "em")], capsys)
    assert code == 2 and not (tmp_path / "em").exists()
    # question files: other types and unknown slots
    (tmp_path / "q.yaml").write_text("- id: a\n  type: multiple_choice\n  paraphrases: [hi]\n")
    code, err = _main(["eval", "em", "--questions", str(tmp_path / "q.yaml"), "--out", str(tmp_path / "e2")], capsys)
    assert code == 2 and "type" in err
    (tmp_path / "q.yaml").write_text("- id: a\n  paraphrases: [hi]\n  judge_prompts: {aligned: 'rate {answr} {answer}'}\n")
    code, err = _main(["eval", "em", "--questions", str(tmp_path / "q.yaml"), "--out", str(tmp_path / "e2")], capsys)
    assert code == 2 and "{answr}" in err
    # a LoRA target that the model does not have
    code, err = _main(["train", "sft", "--model", tiny_ref, "--data", str(chat_file), "--out", str(tmp_path / "a"),
                       "--target-modules", "q_proj,qq_proj"], capsys)
    assert code == 2 and "qq_proj" in err and "k_proj" in err and not (tmp_path / "a").exists()
