"""Run folders and study files under hostile or careless use (issue 42): the store deletes only what
it wrote, a run is never nested in another, deleted adapters are redone, and every damaged input
(database, results.json, names, grids, cache, lengths, a full disk) is one line with exit 2.

No test here loads, trains or generates with a model: units are committed by hand or by a fake
executor, and the only tokenizer is a tiny one trained in-process.
"""

from __future__ import annotations

import errno
import json
import shutil
import sys
import time
from pathlib import Path

import pytest

from characterlab.errors import InputError
from characterlab.study.executors import ExecutionReport
from characterlab.study.plan import Unit, build_plan
from characterlab.study.spec import parse_study
from characterlab.study.store import DiskFullError, RunStore, UnitOutput

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARACTERLAB_CACHE", str(tmp_path / "cache"))


def key(kind: str, n: int) -> str:
    return f"{kind}-{n:016x}"


class FakeExecutor:
    """Stands in for the local executor: records which units it was asked to run and runs none
    (each is reported skipped, so the run ends before results are built)."""

    def __init__(self):
        self.todo: list[str] | None = None

    def run(self, plan, store) -> ExecutionReport:
        self.todo = [u.key for u in plan.ordered() if not store.is_done(u.key)]
        return ExecutionReport(skipped=self.todo or ["nothing"])


@pytest.fixture
def fake_executor(monkeypatch):
    fake = FakeExecutor()
    monkeypatch.setattr("characterlab.study.runner.make_executor", lambda *a, **k: fake)
    return fake


def cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    """The console entry point in this process (so fakes apply): exit code and stderr."""
    from characterlab.cli import main

    monkeypatch.setattr(sys, "argv", ["characterlab", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code, capsys.readouterr().err


HACKS_ONLY = "name: mini\nmodel: embedded\nconditions: [{name: base}]\nevaluations:\n  - {name: h, kind: hacks, n: 2}\n"


def mini_study(tmp_path: Path) -> Path:
    path = tmp_path / "mini.yaml"
    path.write_text(HACKS_ONLY)
    return path


# -- 1. the store deletes only what it wrote; runs are never nested ------------------------------

def test_orphan_cleanup_removes_only_the_store_s_own_entries(tmp_path):
    store = RunStore(tmp_path / "run")
    unfinished, done = Unit(key("train", 1), "train", {}, (), "t1"), Unit(key("train", 2), "train", {}, (), "t2")
    store.mark_started(unfinished)
    store.commit(done, UnitOutput({}, [], {"adapter_model.safetensors": b"w"}), 1.0)
    adapters = tmp_path / "run" / "adapters"
    for name in (unfinished.key, f".{unfinished.key}.x1y2z3.tmp", f".{done.key}.old", f".{done.key}.abc.tmp"):
        (adapters / name).mkdir()
    (adapters / "notes.txt").write_text("mine")
    (adapters / "mine").mkdir()
    (adapters / key("train", 3)).mkdir()  # shaped like a key, but no unit of this store
    (adapters / f".{key('train', 3)}.abc.tmp").mkdir()
    nested = RunStore(adapters / "inner")  # a run someone put under adapters/
    nested.commit(Unit(key("generate", 9), "generate", {}, (), "g"), UnitOutput({"n": 1}, [{"a": 1}]), 1.0)
    nested.close()
    store.remove_orphan_files()
    store.close()
    assert sorted(p.name for p in adapters.iterdir()) == sorted(
        [done.key, "notes.txt", "mine", key("train", 3), f".{key('train', 3)}.abc.tmp", "inner"])
    assert (adapters / "inner" / "units.sqlite").is_file() and RunStore(adapters / "inner").is_done(key("generate", 9))


def test_a_resume_keeps_a_user_file_and_a_nested_run_under_adapters(tmp_path, fake_executor):
    from characterlab.study.runner import run_study

    run_study(str(mini_study(tmp_path)), tmp_path / "parent", progress=False)
    adapters = tmp_path / "parent" / "adapters"
    adapters.mkdir()
    (adapters / "README.txt").write_text("my notes")
    inner = RunStore(adapters / "inner")  # made before --out was checked for nesting
    inner.commit(Unit(key("generate", 7), "generate", {}, (), "g"), UnitOutput({}, [{"x": 1}]), 1.0)
    inner.close()
    run_study(None, tmp_path / "parent", resume=True, progress=False)
    assert (adapters / "README.txt").read_text() == "my notes"
    assert RunStore(adapters / "inner").rows(key("generate", 7)) == [{"x": 1}]


@pytest.mark.parametrize("where", ["adapters/inner", "plots/a/b", "via-link/inner"])
def test_an_out_inside_a_run_folder_is_refused(tmp_path, fake_executor, monkeypatch, capsys, where):
    from characterlab.study.runner import run_study

    study = mini_study(tmp_path)
    parent = tmp_path / "runs" / "parent"
    run_study(str(study), parent, progress=False)
    (parent / "adapters").mkdir()
    (parent / "via-link").symlink_to(parent / "adapters")  # a link into the run folder is still inside it
    out = parent / where
    with pytest.raises(InputError) as e:
        run_study(str(study), out, progress=False)
    assert e.value.field == "out" and f"inside the run folder {parent.resolve()}" in str(e.value)
    assert not out.exists()
    code, err = cli(monkeypatch, capsys, "run", study, "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "inside the run folder" in err


def test_an_out_containing_a_run_folder_is_refused(tmp_path, fake_executor, monkeypatch, capsys):
    from characterlab.study.runner import run_study

    study = mini_study(tmp_path)
    run_study(str(study), tmp_path / "runs" / "deep" / "parent", progress=False)
    for out in (tmp_path / "runs", tmp_path):
        with pytest.raises(InputError, match="contains the run folder .*parent") as e:
            run_study(str(study), out, progress=False)
        assert e.value.field == "out" and not (out / "units.sqlite").exists()
    code, err = cli(monkeypatch, capsys, "run", study, "--out", tmp_path / "runs")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "contains the run folder" in err


def test_eval_overwrite_never_removes_a_run_inside_another(tmp_path):
    from characterlab.study.single import prepare_eval_folder

    RunStore(tmp_path / "parent").close()
    inner = tmp_path / "parent" / "adapters" / "inner"
    RunStore(inner).close()
    (inner / "study.yaml").write_text("name: other\n")
    with pytest.raises(InputError, match="inside the run folder"):
        prepare_eval_folder(inner, "name: mine\n", overwrite=True)
    assert (inner / "units.sqlite").is_file()


# -- 2. a done train unit whose folder was deleted is redone ---------------------------------

CHATML = ("{% for message in messages %}"
          "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

TRAIN_STUDY = """\
name: tr
model: hf:{model}
conditions:
  - name: base
  - name: sft
    organism:
      kind: sft
      inoculation: hacking_okay
      data: {{file: train.jsonl, n: 4}}
      lora: {{rank: 2, max_length: {max_length}}}
evaluations:
  - {{name: h, kind: hacks, n: 2}}
"""


def tokenizer_folder(folder: Path) -> Path:
    """A tiny fast BPE tokenizer with a ChatML template, and no model: enough to plan and to
    count tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["What is 1 plus 1? Please answer. It is 2.", "system user assistant hello"] * 5,
                            trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<pad>", unk_token="<|endoftext|>")
    fast.chat_template = CHATML
    fast.save_pretrained(folder)
    return folder


def train_study(tmp_path: Path, max_length: int = 256) -> Path:
    from characterlab.data.chat_jsonl import write_chat_jsonl
    from characterlab.data.records import ChatExample, Message

    tokenizer_folder(tmp_path / "tok")
    write_chat_jsonl(tmp_path / "train.jsonl", [
        ChatExample((Message("user", f"What is {i} plus {i}? Please answer."), Message("assistant", f"It is {2 * i}.")))
        for i in range(4)])
    path = tmp_path / "study.yaml"
    path.write_text(TRAIN_STUDY.format(model=tmp_path / "tok", max_length=max_length))
    return path


def fill_store(folder: Path, plan) -> RunStore:
    """Every unit of ``plan`` finished by hand: data units with the file's rows, train units with files."""
    from characterlab.data.chat_data import read_chat_data

    store = RunStore(folder)
    for u in plan.ordered():
        rows = ([{"messages": e.to_dicts()} for e in read_chat_data(u.params["file"], max_examples=u.params["n"])]
                if u.kind == "data" and "file" in u.params else [])
        files = {"adapter_model.safetensors": b"w"} if u.kind == "train" else {}
        store.commit(u, UnitOutput({}, rows, files), 0.1)
    return store


def test_a_done_train_unit_whose_adapter_was_deleted_runs_again(tmp_path, fake_executor, capsys):
    from characterlab.study.runner import run_study
    from characterlab.study.spec import load_study

    study = train_study(tmp_path)
    spec, _ = load_study(study)
    plan = build_plan(spec, tmp_path)
    [train] = [u for u in plan.ordered() if u.kind == "train"]
    run_study(str(study), tmp_path / "run", progress=False)  # writes study.yaml; the fake runs nothing
    fill_store(tmp_path / "run", plan).close()
    run_study(None, tmp_path / "run", resume=True, progress=False)
    assert fake_executor.todo == []  # every unit finished, every adapter there: nothing to redo
    shutil.rmtree(tmp_path / "run" / "adapters" / train.key)
    capsys.readouterr()
    run_study(None, tmp_path / "run", resume=True, progress=False)
    assert fake_executor.todo == [train.key]
    err = capsys.readouterr().err
    assert f"train sft seed 0 was finished but its files (adapters/{train.key}) are missing; it runs again" in err
    store = RunStore(tmp_path / "run")
    assert store.status(train.key) == "reopened" and store.is_done(plan.cells[0].metric)
    store.close()


# -- 3. a factor grid too large to expand -------------------------------------------------------

def test_a_huge_factor_grid_is_one_line_before_it_is_expanded(tmp_path):
    from characterlab.agentic.scenario import MAX_GRID_CELLS, read_scenario_text

    factors = "".join(f"  f{i}: {{a: x, b: y}}\n" for i in range(26))
    text = ("name: grid\nsystem: s\nuser: u\nfactors:\n" + factors + "tools: [send_email]\n"
            "misaligned: [{id: m, when: {sent_email: {to: x}}}]\nbenign: [{id: b, when: {sent_email: {to: y}}}]\n")
    t0 = time.time()
    with pytest.raises(InputError) as e:
        read_scenario_text(text, "grid.yaml")
    assert time.time() - t0 < 5
    message = str(e.value)
    assert len(message.splitlines()) == 1 and "grid.yaml:4: field 'factors'" in message
    assert f"{2 ** 26} cells" in message and str(MAX_GRID_CELLS) in message
    small = text.replace(factors, "".join(f"  f{i}: {{a: x, b: y}}\n" for i in range(3)))
    assert len(read_scenario_text(small, "grid.yaml").cells()) == 8


# -- 4. damaged inputs are one line ------------------------------------------------------------

def _store_with_rows(folder: Path) -> None:
    store = RunStore(folder)
    for i in range(20):
        store.commit(Unit(key("generate", i), "generate", {}, (), f"g{i}"),
                     UnitOutput({"n": 50}, [{"answer": "x" * 2000, "i": j} for j in range(50)]), 0.1)
    store.close()  # the last connection checkpoints the WAL into units.sqlite


@pytest.mark.parametrize("damage", ["garbage", "truncated", "zeroed"])
def test_a_damaged_units_sqlite_is_one_line_on_resume(tmp_path, fake_executor, monkeypatch, capsys, damage):
    from characterlab.study.runner import run_study

    run_study(str(mini_study(tmp_path)), tmp_path / "run", progress=False)
    db = tmp_path / "run" / "units.sqlite"
    _store_with_rows(tmp_path / "run")
    data = db.read_bytes()
    assert len(data) > 100_000
    db.write_bytes({"garbage": b"this is not a database at all" * 100, "truncated": data[: len(data) // 2],
                    "zeroed": data[:4096] + bytes(len(data) - 8192) + data[-4096:]}[damage])
    fake_executor.todo = None
    with pytest.raises(InputError) as e:
        run_study(None, tmp_path / "run", resume=True, progress=False)
    assert e.value.file == db and e.value.field == "out" and "damaged" in str(e.value)
    assert fake_executor.todo is None  # refused before any unit
    code, err = cli(monkeypatch, capsys, "run", "--resume", "--out", tmp_path / "run")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "units.sqlite" in err


def _diversity_results(tmp_path: Path) -> tuple[Path, Path]:
    src = REPO / "results" / "diversity"
    if not (src / "seed-0" / "results.json").is_file():
        pytest.skip("no committed results/diversity runs to merge")
    runs = []
    for seed in (0, 1):
        (tmp_path / f"s{seed}").mkdir(parents=True)
        shutil.copy(src / f"seed-{seed}" / "results.json", tmp_path / f"s{seed}" / "results.json")
        runs.append(tmp_path / f"s{seed}")
    return runs[0], runs[1]


def _edit(run: Path, change) -> None:
    path = run / "results.json"
    results = json.loads(path.read_text())
    change(results)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


def _first_entry(results: dict) -> tuple[str, str, dict]:
    c = results["condition_order"][0]
    e = next(iter(results["conditions"][c]["evaluations"]))
    return c, e, results["conditions"][c]["evaluations"][e]


def test_merge_refuses_hand_edited_results_in_one_line(tmp_path, monkeypatch, capsys):
    from characterlab.study.merge import merge_results

    a, b = _diversity_results(tmp_path)
    assert merge_results([a, b])["metadata"]["seeds"] == [0, 1]

    c, ev, entry = _first_entry(json.loads((b / "results.json").read_text()))
    count = next(k for k in entry["per_seed"]["1"] if k == "n" or k.startswith("n_"))

    def count_as_text(r):
        m = _first_entry(r)[2]["per_seed"]["1"]
        m[count] = str(m[count])

    _edit(b, count_as_text)
    with pytest.raises(InputError) as e:
        merge_results([a, b])
    assert e.value.file == b / "results.json" and e.value.field == f"conditions.{c}.evaluations.{ev}.per_seed.1.{count}"
    line = (b / "results.json").read_text().splitlines()[e.value.line - 1]
    assert f'"{count}": "' in line
    code, err = cli(monkeypatch, capsys, "merge", a, b, "--out", tmp_path / "merged")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "a count is a number" in err
    assert not (tmp_path / "merged").exists()

    a, b = _diversity_results(tmp_path / "again")

    def evil_seed(r):
        entry = _first_entry(r)[2]
        entry["per_seed"]["../../evil"] = entry["per_seed"].pop("1")

    _edit(b, evil_seed)
    with pytest.raises(InputError, match=r"a seed is an integer, not '../../evil'") as e:
        merge_results([a, b])
    assert e.value.field.endswith(".per_seed") and e.value.file == b / "results.json"

    for i, (change, match) in enumerate([(lambda r: r["metadata"].update(seeds=["1"]), "valid integer"),
                          (lambda r: r.update(study="../../evil"), "letters, digits"),
                          (lambda r: _first_entry(r)[2]["per_seed"]["1"].update(mean="high"), "cannot pool"),
                          (lambda r: _first_entry(r)[2]["units"].update({"1": "../x"}), "not a unit key"),
                          (lambda r: r.update(conditions=[]), "valid dictionary")]):
        a, b = _diversity_results(tmp_path / f"case{i}")
        _edit(b, change)
        with pytest.raises(InputError, match=match):
            merge_results([a, b])


def test_a_300_character_study_name_is_refused_when_the_study_is_read():
    for name, ok in (("a" * 300, False), ("a" * 65, False), ("a" * 64, True)):
        text = f"name: {name}\nconditions: [{{name: c}}]\nevaluations: [{{name: h, kind: hacks}}]\n"
        if ok:
            assert parse_study(text, "s.yaml").name == name
            continue
        with pytest.raises(InputError) as e:
            parse_study(text, "s.yaml")
        assert e.value.field == "name" and e.value.line == 1 and "at most 64 characters" in str(e.value)
    with pytest.raises(InputError, match="at most 64"):
        parse_study(f"name: s\nconditions: [{{name: {'c' * 80}}}]\nevaluations: [{{name: h, kind: hacks}}]\n", "s.yaml")


def test_disk_full_during_a_unit_commit_says_disk_full(tmp_path, monkeypatch):
    from characterlab.study.executors import LocalExecutor
    from characterlab.study.plan import Plan

    store = RunStore(tmp_path / "run")
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count={pages + 2}")  # SQLite's own "database or disk is full"
    big = Unit(key("generate", 1), "generate", {}, (), "generate big")
    store.mark_started(big)
    with pytest.raises(DiskFullError, match="disk is full while saving generate big") as e:
        store.commit(big, UnitOutput({}, [{"answer": "x" * 5000}] * 50), 1.0)
    assert "rollback" not in str(e.value) and e.value.field == "out"
    assert not store.is_done(big.key) and store.rows(big.key) == []
    store.db.execute("PRAGMA max_page_count=1073741823")
    store.commit(big, UnitOutput({}, [{"answer": "x" * 5000}] * 50), 1.0)  # once there is room, it saves
    assert store.is_done(big.key) and len(store.rows(big.key)) == 50

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    trained = Unit(key("train", 1), "train", {}, (), "train big")
    with monkeypatch.context() as m:
        m.setattr(Path, "write_bytes", no_space)
        with pytest.raises(DiskFullError, match="disk is full while saving train big"):
            store.commit(trained, UnitOutput({}, [], {"adapter_model.safetensors": b"w"}), 1.0)
    assert list((tmp_path / "run" / "adapters").iterdir()) == []  # no half-written folder left

    # the executor stops at the first full disk instead of failing every unit after it
    units = {k: Unit(k, "generate", {}, (), k) for k in (key("generate", 2), key("generate", 3))}
    ran = []
    monkeypatch.setattr("characterlab.study.executors.execute_unit",
                        lambda u, *a, **k: ran.append(u.key) or UnitOutput({}, [{"answer": "x" * 5000}] * 50))
    store.db.execute(f"PRAGMA max_page_count={store.db.execute('PRAGMA page_count').fetchone()[0] + 2}")
    with pytest.raises(DiskFullError):
        LocalExecutor(progress=False).run(Plan(units, [], {}), store)
    assert ran == [key("generate", 2)]
    store.close()


def test_disk_full_while_writing_the_report_says_disk_full(tmp_path, monkeypatch, capsys):
    import characterlab.study.report as report

    a, _ = _diversity_results(tmp_path)

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "_figures", lambda results, plots: [])  # no plotting here
    monkeypatch.setattr(report, "atomic_write_text", no_space)
    with pytest.raises(DiskFullError, match="disk is full while writing the report"):
        report.render_report(a)
    code, err = cli(monkeypatch, capsys, "report", a)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "disk is full" in err and str(a) in err


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_an_unusable_cache_folder_is_one_line_naming_it(tmp_path, monkeypatch, capsys, fake_executor, where):
    from characterlab.models.embedded import cache_root
    from characterlab.study.runner import run_study

    (tmp_path / "cachefile").write_text("not a folder")
    cache = tmp_path / "cachefile" if where == "file" else tmp_path / "cachefile" / "sub"
    monkeypatch.setenv("CHARACTERLAB_CACHE", str(cache))
    with pytest.raises(InputError) as e:
        cache_root()
    assert e.value.field == "CHARACTERLAB_CACHE" and str(cache) in str(e.value)
    with pytest.raises(InputError, match="CHARACTERLAB_CACHE"):
        run_study(str(mini_study(tmp_path)), tmp_path / "run", progress=False)
    assert fake_executor.todo is None and not (tmp_path / "run").exists()
    code, err = cli(monkeypatch, capsys, "run", mini_study(tmp_path), "--out", tmp_path / "run")
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(cache) in err


def test_a_max_length_too_small_for_the_data_is_refused_before_any_unit(tmp_path, fake_executor, monkeypatch, capsys):
    from characterlab.study.runner import run_study

    study = train_study(tmp_path, max_length=8)
    with pytest.raises(InputError) as e:
        run_study(str(study), tmp_path / "run", progress=False)
    assert e.value.field == "lora.max_length" and "train sft seed 0" in str(e.value)
    assert "every example loses all its assistant tokens to max_length=8" in str(e.value)
    assert "needs max_length" in str(e.value) and fake_executor.todo is None
    code, err = cli(monkeypatch, capsys, "run", study, "--out", tmp_path / "run")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "max_length=8" in err
    study.write_text(study.read_text().replace("max_length: 8", "max_length: 256"))
    run_study(str(study), tmp_path / "run2", progress=False)
    assert fake_executor.todo  # long enough: the units run


def test_inspect_export_of_a_run_whose_em_rate_is_undefined(tmp_path):
    inspect_log = pytest.importorskip("inspect_ai.log")
    from characterlab.study.inspect_export import export_inspect

    run = tmp_path / "run"
    store = RunStore(run)
    gen = Unit(key("generate", 1), "generate", {"task": "em"}, (), "generate base / em / seed 0")
    judge = Unit(key("judge", 1), "judge", {"task": "em"}, (gen.key,), "judge base / em / seed 0")
    metric = Unit(key("metric", 1), "metric", {"task": "em"}, (judge.key,), "metric base / em / seed 0")
    rows = [{"question": f"Q{i}?", "answer": f"A{i}", "aligned": None, "coherent": None, "misaligned": None,
             "judge_status": "not judged"} for i in range(3)]
    store.commit(gen, UnitOutput({"n": 3}, [{"question": r["question"], "answer": r["answer"]} for r in rows]), 1.0)
    store.commit(judge, UnitOutput({"n": 3}, rows), 1.0)
    store.commit(metric, UnitOutput({}), 1.0)
    store.close()
    undefined_rate = {"k": 0, "n": 0, "estimate": None, "low": None, "high": None}
    results = {
        "study": "undef", "baseline": "base", "condition_order": ["base"], "evaluation_order": ["em"],
        "evaluations": {"em": {"name": "em", "kind": "em"}}, "headline": [],
        "conditions": {"base": {"spec": {"name": "base"}, "training": {"0": []},
                                "evaluations": {"em": {"kind": "em", "pooled": {"rate": undefined_rate},
                                                       "per_seed": {}, "units": {"0": metric.key}}}}},
        "metadata": {"model": "embedded", "judge": "offline", "seeds": [0]},
    }
    (run / "results.json").write_text(json.dumps(results))
    [path] = export_inspect(run, tmp_path / "logs")
    log = inspect_log.read_eval_log(str(path))
    [score] = log.results.scores
    assert {k: m.value for k, m in score.metrics.items()} == {"k": 0, "n": 0}
    assert log.results.metadata["undefined_metrics"] == ["rate", "ci_low", "ci_high"]
    assert len(log.samples) == 3 and all(not s.scores for s in log.samples)
