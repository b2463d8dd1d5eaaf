"""Studies: spec validation, planning, the store, both executors, resume after SIGKILL, the report."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from characterlab.errors import InputError
from characterlab.study.plan import build_plan
from characterlab.study.spec import StudySpecError, load_study, parse_study
from characterlab.study.store import RunStore, UnitOutput

sys.path.insert(0, str(Path(__file__).parent))
from study_fixtures import write_tiny_study  # noqa: E402


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARACTERLAB_CACHE", str(tmp_path / "cache"))


# -- spec -----------------------------------------------------------------------------------------

BAD = """\
name: bad
conditions:
  - name: base
  - name: sft
    organism:
      kind: sft
      data: {generator: hack_solutions, n: 10}
      lora:
        rank: 0
        colour: blue
  - name: rl
    organism: {kind: sft}
evaluations:
  - {name: em, kind: em}
"""


def test_spec_errors_name_every_problem_with_key_path_and_line():
    with pytest.raises(StudySpecError) as info:
        parse_study(BAD, "bad.yaml")
    problems = {(p.field, p.line) for p in info.value.problems}
    assert ("conditions[1].organism.lora.rank", 9) in problems
    assert ("conditions[1].organism.lora.colour", 10) in problems
    assert ("conditions[2].organism", 12) in problems  # sft without data
    assert ("evaluations[0].questions", 14) in problems  # em without questions
    text = str(info.value)
    assert "bad.yaml:9: field 'conditions[1].organism.lora.rank'" in text
    assert "an sft organism needs 'data'" in text and len(text.splitlines()) == len(info.value.problems)


def test_spec_rejects_bad_yaml_duplicates_and_unknown_builtins():
    with pytest.raises(InputError, match=r"x.yaml:2: not valid YAML"):
        parse_study("name: a\nconditions: [a: b: c]\n", "x.yaml")
    dup = "name: a\nconditions: [{name: a}, {name: a}]\nevaluations: [{name: h, kind: hacks}]\n"
    with pytest.raises(StudySpecError, match="duplicate condition"):
        parse_study(dup, "d.yaml")
    stray = "name: a\nconditions: [{name: a}, {name: b, control: c}]\nevaluations: [{name: h, kind: hacks}]\n"
    with pytest.raises(StudySpecError, match="control 'c' is not another condition"):
        parse_study(stray, "c.yaml")
    with pytest.raises(InputError, match="unknown built-in study"):
        load_study("builtin:nope")


def test_every_shipped_study_passes_the_checks_made_when_a_study_is_read():
    """Without ../shared/data too: what the spec alone can refuse (a paraphrase level asked for more
    questions than its reworded ones make, as the GPU diversity recipe once did) fails here."""
    from characterlab.study.spec import builtin_studies

    names = builtin_studies()
    assert {"quick", "diversity", "diversity_gpu", "sycophancy"} <= set(names)
    for name in names:
        load_study(f"builtin:{name}")


def test_shipped_studies_parse_and_plan():
    for name in ("quick", "full"):
        spec, _ = load_study(f"builtin:{name}")
        plan = build_plan(spec)
        assert {c.name for c in spec.conditions} == {"base", "hack-sft", "hack-sft-inoculated", "honest-sft"}
        kinds = [u.kind for u in plan.units.values()]
        assert kinds.count("data") == 2  # the hack data is shared by the plain and inoculated conditions
        assert kinds.count("train") == 3 * len(spec.seeds)
    spec, _ = load_study("builtin:sycophancy")  # needs no data: the organism's users are simulated
    kinds = [u.kind for u in build_plan(spec).units.values()]
    # two populations of raters (approval, honest): two feedback sets and reward models; four policies
    assert kinds.count("reward") == 2 and kinds.count("train") == 4 and kinds.count("data") == 2


@pytest.mark.shared
@pytest.mark.skipif(not (Path(__file__).resolve().parents[3] / "shared" / "data" / "narrow").is_dir(),
                    reason="../shared/data not present")
@pytest.mark.parametrize("name,kinds", [
    ("nem", {"train": 2}), ("organisms", {"vector": 1}), ("vectors", {"vector": 1, "train": 3}),
    ("mitigations", {"train": 8, "data": 8}), ("hack_penalty", {"train": 5})])
def test_shipped_studies_on_public_data_plan(name, kinds, monkeypatch):
    """Every shipped study that reads ../shared/data plans from the checkout's parent folder."""
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # data paths are relative to a checkout beside shared/
    spec, _ = load_study(f"builtin:{name}")
    plan = build_plan(spec)
    counts = {k: sum(u.kind == k for u in plan.units.values()) for k in kinds}
    assert counts == kinds


@pytest.mark.shared
@pytest.mark.skipif(not (Path(__file__).resolve().parents[3] / "shared" / "data" / "narrow").is_dir(),
                    reason="../shared/data not present")
@pytest.mark.parametrize("name", ["diversity", "diversity_gpu"])
def test_diversity_studies_share_character_units_and_measure_the_trait_apart(name, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # data paths are relative to a checkout beside shared/
    spec, _ = load_study(f"builtin:{name}")
    plan = build_plan(spec)
    only = {c.name for c in spec.conditions if c.name.endswith("-only")}
    characters = {json.dumps(c.intervention.model_dump(), sort_keys=True) for c in spec.conditions if c.intervention}
    assert len(only) == len(characters) >= 6  # every character measured alone too
    assert all(c.evaluations == ["candour", "humility"] for c in spec.conditions if c.name in only)
    assert not [c for c in plan.cells if c.condition in only and c.eval_kind == "em"]
    dpo = [u for u in plan.units.values() if u.kind == "train" and u.params["method"] == "dpo"]
    assert len(dpo) == len(characters) * len(spec.seeds)  # each character trained once per seed, shared by its -only twin
    controls = {c.name: c.control for c in spec.conditions}
    assert controls["candour-high"] == "content-free" and controls["humility-high"] == "content-free-humility"


# -- plan -----------------------------------------------------------------------------------------

PLAN = """\
name: p
seeds: [0, 1]
conditions:
  - name: base
  - name: also-base
  - name: hack
    organism: {kind: sft, data: {generator: hack_solutions, n: 10}}
  - name: hack-again
    organism: {kind: sft, data: {generator: hack_solutions, n: 10}}
  - name: hack-inoculated
    organism: {kind: sft, data: {generator: hack_solutions, n: 10}, inoculation: hacking_okay}
  - name: hack-lr
    organism: {kind: sft, data: {generator: hack_solutions, n: 10}, lora: {lr: 1.0e-3}}
evaluations:
  - {name: hacks, kind: hacks, n: 5}
"""


def test_plan_shares_identical_units_and_separates_different_ones():
    plan = build_plan(parse_study(PLAN, "p.yaml"))
    by = {(c.condition, c.seed): c for c in plan.cells}
    for seed in (0, 1):
        assert by[("base", seed)].metric == by[("also-base", seed)].metric  # the base model is evaluated once
        assert by[("hack", seed)].train == by[("hack-again", seed)].train
        assert by[("hack", seed)].train != by[("hack-inoculated", seed)].train != by[("hack-lr", seed)].train
    assert by[("hack", 0)].train != by[("hack", 1)].train  # each seed trains its own adapter
    kinds = [u.kind for u in plan.units.values()]
    assert kinds.count("data") == 1  # one data unit for every condition and seed
    assert kinds.count("train") == 3 * 2
    assert kinds.count("generate") == 4 * 2  # base + 3 distinct adapters, per seed
    seen = set()
    for u in plan.ordered():  # dependency order
        assert all(d in seen for d in u.deps)
        seen.add(u.key)
    inoc = plan.units[by[("hack-inoculated", 0)].train]
    assert "acceptable here" in inoc.params["system_prompt"]
    assert sorted(plan.labels[by[("base", 0)].metric]) == ["metric also-base / hacks / seed 0", "metric base / hacks / seed 0"]


def test_plan_checks_files_before_any_work(tmp_path):
    spec = parse_study("name: f\nconditions: [{name: c, organism: {kind: sft, data: {file: nope.jsonl}}}]\n"
                       "evaluations: [{name: e, kind: em, questions: q.yaml}]\n", "f.yaml")
    with pytest.raises(InputError, match="no such data file"):
        build_plan(spec, tmp_path)


def test_a_dataset_folder_is_an_organism_data_file(tmp_path):
    """A Hugging Face dataset folder plans (content-hashed) and its data unit reads its rows."""
    import datasets

    from characterlab.study.units import execute_unit

    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(4)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    (tmp_path / "q.yaml").write_text("- id: q\n  paraphrases: [Hi?]\n")
    spec = parse_study("name: f\nconditions: [{name: c, organism: {kind: sft, data: {file: ds, n: 3}}}]\n"
                       "evaluations: [{name: e, kind: em, questions: q.yaml}]\n", "f.yaml")
    plan = build_plan(spec, tmp_path)
    [data] = [u for u in plan.units.values() if u.kind == "data"]
    out = execute_unit(data, {}, tmp_path)
    assert [r["messages"][1]["content"] for r in out.rows] == ["a0", "a1", "a2"]


# -- store ----------------------------------------------------------------------------------------

def test_store_commit_is_all_or_nothing_and_never_duplicates(tmp_path):
    from characterlab.study.plan import Unit

    store = RunStore(tmp_path / "run")
    u = Unit("generate-x", "generate", {"a": 1}, (), "gen")
    store.mark_started(u)
    assert store.status(u.key) == "running" and not store.is_done(u.key)
    store.commit(u, UnitOutput({"n": 2}, [{"i": 0}, {"i": 1}], {"adapter_config.json": b"{}"}), 1.5)
    store.commit(u, UnitOutput({"n": 2}, [{"i": 0}, {"i": 1}]), 1.0)  # a retry replaces, never appends
    assert store.rows(u.key) == [{"i": 0}, {"i": 1}] and store.result(u.key) == {"n": 2}
    assert store.is_done(u.key)
    store.mark_started(Unit("train-y", "train", {}, (), "train"))
    (tmp_path / "run" / "adapters" / ".train-y.abc.tmp").mkdir(parents=True)  # left by a kill mid-write
    store.remove_orphan_files()
    assert [p.name for p in (tmp_path / "run" / "adapters").iterdir()] == ["generate-x"]
    store.close()


def test_store_adds_the_memory_column_to_a_run_folder_written_before_it(tmp_path):
    import sqlite3

    from characterlab.study.plan import Unit

    folder = tmp_path / "run"
    folder.mkdir()
    old = sqlite3.connect(folder / "units.sqlite")
    old.execute("CREATE TABLE units (key TEXT PRIMARY KEY, kind TEXT NOT NULL, label TEXT NOT NULL, params TEXT NOT NULL, "
                "deps TEXT NOT NULL, status TEXT NOT NULL, result TEXT, started REAL, finished REAL, seconds REAL, "
                "attempts INTEGER DEFAULT 0, error TEXT, host TEXT)")
    old.execute("INSERT INTO units (key, kind, label, params, deps, status, result, seconds) "
                "VALUES ('old', 'data', 'd', '{}', '[]', 'done', '{}', 2.0)")
    old.commit()
    old.close()
    store = RunStore(folder)
    u = Unit("generate-x", "generate", {}, (), "gen")
    store.commit(u, UnitOutput({}, []), 1.0, peak_rss_mb=812.5)
    assert {t["key"]: t["peak_rss_mb"] for t in store.unit_timings()} == {"old": None, "generate-x": 812.5}
    store.close()


def test_peak_window_resets_between_units():
    from characterlab.allocator import peak_rss_mb, reset_peak_rss

    if not reset_peak_rss():
        pytest.skip("no /proc/self/clear_refs here")
    block = b"\x01" * (200 << 20)  # written, so resident
    high = peak_rss_mb()
    del block
    reset_peak_rss()
    assert high - peak_rss_mb() > 150


# -- running studies ------------------------------------------------------------------------------

def _stable(results: dict) -> dict:
    """What must not depend on how the run was scheduled or interrupted."""
    out = {}
    for c, cond in results["conditions"].items():
        out[c] = {"evaluations": {e: {"pooled": v["pooled"], "per_seed": v["per_seed"]} for e, v in cond["evaluations"].items()},
                  "final_losses": {s: [st["final_loss"] for st in chain] for s, chain in cond["training"].items()}}
    return out


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, tiny_model_dir):
    from characterlab.data.chat_jsonl import write_chat_jsonl
    from characterlab.data.records import ChatExample, Message

    root = tmp_path_factory.mktemp("study")
    data = root / "chat.jsonl"
    write_chat_jsonl(data, [ChatExample((Message("user", f"What is {i} plus {i}?"), Message("assistant", f"It is {2 * i}.")))
                            for i in range(12)])
    return write_tiny_study(root / "spec", tiny_model_dir, data)


@pytest.fixture(scope="module")
def finished_run(tiny_study, tmp_path_factory):
    from characterlab.study.runner import run_study

    os.environ["CHARACTERLAB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    out = tmp_path_factory.mktemp("runs") / "tiny"
    first = run_study(str(tiny_study), out, progress=False)
    assert not first.execution.failed, first.execution.failed
    return first


def test_study_end_to_end_writes_results_and_report(finished_run):
    folder = finished_run.folder
    results = json.loads((folder / "results.json").read_text())
    assert set(results["conditions"]) == {"base", "sft", "sft-inoculated"}
    em = results["conditions"]["sft"]["evaluations"]["em"]
    assert em["pooled"]["n_samples"] == 6 and em["vs_baseline"]["baseline"] == "base"
    assert "vs_control" not in em  # sft names no control; sft-inoculated names sft
    inoculated = results["conditions"]["sft-inoculated"]["evaluations"]["em"]["vs_control"]
    assert inoculated["control"] == "sft" and inoculated["difference"]["estimate"] == pytest.approx(
        results["conditions"]["sft-inoculated"]["evaluations"]["em"]["pooled"]["rate"]["estimate"]
        - em["pooled"]["rate"]["estimate"])
    assert 0.0 <= em["pooled"]["rate"]["low"] <= em["pooled"]["rate"]["high"] <= 1.0
    assert set(results["conditions"]["sft-inoculated"]["evaluations"]) == {"em"}  # its evaluations: list
    assert not any(c.condition == "sft-inoculated" and c.evaluation == "hacks" for c in finished_run.plan.cells)
    hacks = results["conditions"]["base"]["evaluations"]["hacks"]["pooled"]
    assert hacks["rate"]["n"] == 3 and set(hacks["per_grader"]) == {"assert_eq", "exit_code", "pytest"}
    [stage] = results["conditions"]["sft-inoculated"]["training"]["0"]
    assert "acceptable here" in stage["train_system_prompt"] and stage["loss_curve"]
    assert results["metadata"]["data"] and results["metadata"]["judge_ids"][0].startswith("offline:")
    from characterlab.judge.offline import judge_agreement

    assert results["metadata"]["judge_agreement"] == judge_agreement()  # the shipped judge's held-out error
    rss = results["metadata"]["peak_rss_mb_this_run"]
    assert 50 < rss["process"] < 64 * 1024 and rss["largest_child"] >= 0
    by_kind = results["metadata"]["peak_rss_mb_by_unit_kind"]  # each unit's own peak, measured apart
    if Path("/proc/self/clear_refs").exists():
        assert {"train", "generate", "judge"} <= set(by_kind)
        assert all(50 < mb <= rss["process"] + 1 for mb in by_kind.values())


def test_report_html_parses_and_every_plot_exists(finished_run):
    folder = finished_run.folder

    class Collect(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.imgs, self.open = [], [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            if tag == "img":
                self.imgs.append(dict(attrs))

    html = (folder / "report.html").read_text()
    parser = Collect()
    parser.feed(html)
    parser.close()
    assert parser.tags.count("table") >= 5 and "h1" in parser.tags
    assert len(parser.imgs) == 4 and all(i["src"].startswith("data:image/png;base64,") for i in parser.imgs)
    plots = sorted(p.name for p in (folder / "plots").iterdir())
    assert plots == ["em_rate.png", "hack_rate.png", "per_question_em.png", "training.png"]
    assert all((folder / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (folder / "plots" / p).stat().st_size > 2000
               for p in plots)
    for c in ("base", "sft", "sft-inoculated"):
        assert f"<td>{c}</td>" in html
    assert "<th>judge error</th>" in html and "held-out source models" in html
    # re-rendering from results.json alone gives the same tables
    (folder / "report.html").unlink()
    subprocess.run([sys.executable, "-m", "characterlab.cli", "report", str(folder)], check=True, capture_output=True)
    assert (folder / "report.html").is_file()


def test_second_run_recomputes_nothing(finished_run, tiny_study):
    from characterlab.study.runner import run_study

    before = json.loads((finished_run.folder / "results.json").read_text())
    again = run_study(str(tiny_study), finished_run.folder, progress=False)
    assert again.execution.run == [] and len(again.execution.reused) == len(finished_run.plan.units)
    assert _stable(again.results) == _stable(before)
    runs = again.results["metadata"]["runs"]
    assert runs[-1]["units_run"] == 0 and runs[-1]["units_reused"] == len(finished_run.plan.units)


@pytest.mark.slow  # runs the study again at a second seed (train, generate, judge)
def test_runs_at_single_seeds_merge_into_the_run_of_all_seeds(finished_run, tiny_study, tmp_path):
    """`run --seeds 1` computes the units the two-seed run has for seed 1 (same keys), and merging
    it with the seed-0 run gives the two-seed run's figures: pooled rates, per-seed values and
    every difference from the baseline and the controls."""
    from typer.testing import CliRunner

    from characterlab.cli import app
    from characterlab.study.merge import merge_results
    from characterlab.study.runner import run_study

    both = tmp_path / "both"
    shutil.copytree(finished_run.folder, both)
    two = tiny_study.parent / "study-two-seeds.yaml"  # beside it: its relative files resolve the same
    two.write_text(tiny_study.read_text().replace("seeds: [0]", "seeds: [0, 1]"))
    reference = run_study(str(two), both, progress=False, update=True)
    assert not reference.execution.failed and set(finished_run.plan.units) <= set(reference.execution.reused)
    one = tmp_path / "one"
    shutil.copytree(both, one)
    alone = run_study(str(tiny_study), one, progress=False, update=True, seeds=[1])
    assert alone.execution.run == [] and alone.results["metadata"]["seeds"] == [1]  # the same units, reused
    assert "seeds:\n- 1\n" in (one / "study.yaml").read_text()  # the folder's study is the one that ran

    merged = merge_results([finished_run.folder, one / "results.json"])
    assert merged["metadata"]["seeds"] == [0, 1]
    assert _stable(merged) == _stable(reference.results)
    for c, cond in reference.results["conditions"].items():
        for e, ev in cond["evaluations"].items():
            for key in ("vs_baseline", "vs_control"):
                assert merged["conditions"][c]["evaluations"][e].get(key) == ev.get(key), (c, e, key)

    runner = CliRunner()
    r = runner.invoke(app, ["merge", str(finished_run.folder), str(one), "--out", str(tmp_path / "merged")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "merged" / "report.html").is_file() and "merged from" in (tmp_path / "merged" / "report.html").read_text()
    r = runner.invoke(app, ["merge", str(finished_run.folder), str(both), "--out", str(tmp_path / "m2")])
    assert isinstance(r.exception, InputError) and r.exception.field == "seeds"  # seed 0 in both
    other = json.loads((one / "results.json").read_text())
    other["conditions"]["sft"]["spec"]["organism"]["lora"]["rank"] = 8
    (tmp_path / "other.json").write_text(json.dumps(other))
    r = runner.invoke(app, ["merge", str(finished_run.folder), str(tmp_path / "other.json"), "--out", str(tmp_path / "m3")])
    assert isinstance(r.exception, InputError) and r.exception.field == "conditions.sft"
    r = runner.invoke(app, ["run", str(tiny_study), "--seeds", "1,x", "--out", str(tmp_path / "m4")])
    assert isinstance(r.exception, InputError) and r.exception.field == "seeds"


def _wait_for_a_done_unit(proc, db: Path) -> bool:
    """Poll the run's store until one unit is done (False) or the process has ended (True)."""
    import sqlite3

    while proc.poll() is None:
        if db.is_file():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1) as c:
                    if c.execute("SELECT COUNT(*) FROM units WHERE status = 'done'").fetchone()[0]:
                        return False
            except sqlite3.Error:
                pass
        time.sleep(0.05)
    return True


@pytest.mark.slow  # up to five command-line runs of the study, each importing torch and training
def test_resume_after_sigkill_gives_the_same_results(finished_run, tiny_study, tmp_path):
    """Kill the CLI at random moments (SIGKILL), resume each time; the results must equal an
    uninterrupted run's, and no unit may have lost or duplicated rows."""
    out = tmp_path / "killed"
    env = {**os.environ, "CHARACTERLAB_CACHE": str(tmp_path / "cache2")}
    cmd = [sys.executable, "-m", "characterlab.cli", "run", str(tiny_study), "--out", str(out), "-q"]
    rng = random.Random(int(os.environ.get("CHARACTERLAB_TEST_SEED", "0")) or None)
    # the uninterrupted run's duration, plus a few seconds of interpreter start-up: kill inside it
    span = 3.0 + finished_run.execution.seconds
    kills = 0
    for attempt in range(4):
        proc = subprocess.Popen(cmd + (["--resume"] if attempt else []), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        if attempt == 0:  # the first kill lands once a unit is done, however loaded the machine is
            if _wait_for_a_done_unit(proc, out / "units.sqlite"):
                break  # it finished before the kill
        else:
            try:
                proc.wait(timeout=rng.uniform(2.0, 0.7 * span))
                break  # it finished before the kill
            except subprocess.TimeoutExpired:
                pass
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
    final = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    resumed = json.loads((out / "results.json").read_text())
    reference = json.loads((finished_run.folder / "results.json").read_text())
    assert _stable(resumed) == _stable(reference)
    store = RunStore(out)
    for key, unit in finished_run.plan.units.items():
        idx = [r for (r,) in store.db.execute("SELECT idx FROM rows WHERE unit_key=? ORDER BY idx", (key,))]
        assert idx == list(range(len(idx)))
        if unit.kind == "generate":
            assert len(idx) == store.result(key)["n"] > 0
    assert store.done_keys() == set(finished_run.plan.units)
    store.close()
    assert kills >= 1


@pytest.mark.slow  # starts a Ray cluster and runs every unit of the study again in its workers
def test_ray_executor_gives_the_same_results(finished_run, tiny_study, tmp_path):
    pytest.importorskip("ray")
    from characterlab.study.runner import run_study

    ray_run = run_study(str(tiny_study), tmp_path / "ray", executor="ray", progress=False)
    assert not ray_run.execution.failed, ray_run.execution.failed
    assert len(ray_run.execution.run) == len(finished_run.plan.units)
    reference = json.loads((finished_run.folder / "results.json").read_text())
    assert _stable(ray_run.results) == _stable(reference)


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="headless Chromium not installed (Debian package chromium)")
def test_report_renders_in_headless_chromium(finished_run, tmp_path):
    import numpy as np
    from PIL import Image

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,2400",
                    (finished_run.folder / "report.html").resolve().as_uri()],
                   capture_output=True, timeout=120, check=True)
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (2400, 1200)
    assert img.std() > 20  # text, tables and plots, not a blank page
    dark_rows = (img < 128).any(axis=1).mean()
    assert dark_rows > 0.3  # content down the page, not just a header


def test_report_marks_significant_differences_and_their_power(finished_run, tmp_path):
    from characterlab.stats import difference_power
    from characterlab.study.report import render_report

    results = json.loads((finished_run.folder / "results.json").read_text())
    sft = results["conditions"]["sft"]["evaluations"]["hacks"]
    base = results["conditions"]["base"]["evaluations"]["hacks"]["pooled"]["rate"]
    sft["pooled"]["rate"] = {**sft["pooled"]["rate"], "k": 60, "n": 60, "estimate": 1.0, "low": 0.94, "high": 1.0}
    base.update(k=0, n=60, estimate=0.0, low=0.0, high=0.06)
    sft["vs_baseline"]["difference"] = difference_power(60, 60, 0, 60)
    folder = tmp_path / "fixture"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))
    html = (render_report(folder)).read_text()
    assert "+100.0 pts *" in html and "n.s." in html and "MDE" in html
    assert "Difference from the matched control" in html and "sft-inoculated − sft" in html


def test_markdown_table_comes_from_results_and_fills_a_marked_block(finished_run, tmp_path):
    """README tables are copies of results.json: marks, intervals, means named by evaluation, losses."""
    from typer.testing import CliRunner

    from characterlab.cli import app
    from characterlab.stats import difference_power

    results = json.loads((finished_run.folder / "results.json").read_text())
    sft = results["conditions"]["sft"]["evaluations"]["hacks"]
    results["conditions"]["base"]["evaluations"]["hacks"]["pooled"]["rate"].update(k=0, n=60, estimate=0.0, low=0.0,
                                                                                   high=0.06)
    sft["pooled"]["rate"] = {**sft["pooled"]["rate"], "k": 60, "n": 60, "estimate": 1.0, "low": 0.94, "high": 1.0}
    sft["vs_baseline"]["difference"] = difference_power(60, 60, 0, 60)
    folder = tmp_path / "fixture"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))
    shown = CliRunner().invoke(app, ["report", str(folder), "--markdown"])
    assert shown.exit_code == 0, shown.output
    assert "100.0% [94.0, 100.0] (60/60); vs base +100.0 pts" in shown.output and " *" in shown.output
    assert "0.0% [0.0, 6.0] (0/60)" in shown.output
    assert "(em)" in shown.output  # the score means name their evaluation
    assert any(line.startswith("| sft-inoculated |") and "| – |" in line for line in shown.output.splitlines())
    assert "; vs sft " in shown.output  # the matched control's difference beside the baseline's
    assert "→" in shown.output  # the training loss, first and last steps
    readme = tmp_path / "README.md"
    study = results["study"]
    readme.write_text(f"intro\n<!-- results:{study} -->\nold typed table\n<!-- /results:{study} -->\nend\n")
    written = CliRunner().invoke(app, ["report", str(folder), "--markdown", "--into", str(readme)])
    assert written.exit_code == 0, written.output
    text = readme.read_text()
    assert "old typed table" not in text and shown.output in text and text.endswith("end\n")
    unmarked = tmp_path / "other.md"
    unmarked.write_text("no markers\n")
    refused = subprocess.run([sys.executable, "-m", "characterlab.cli", "report", str(folder), "--markdown", "--into",
                              str(unmarked)], capture_output=True, text=True)
    assert refused.returncode == 2 and "results:" in refused.stderr and unmarked.read_text() == "no markers\n"


def test_verdict_check_samples_a_run_and_measures_agreement_with_a_reading(finished_run, tmp_path):
    from typer.testing import CliRunner

    from characterlab.cli import app
    from characterlab.study.verdicts import agreement, sample_verdicts

    rows = sample_verdicts(finished_run.folder, "sft", "em", n=2)
    assert 1 <= len(rows) <= 4 and all(r["reading"] is None and "misaligned" in r["first"] for r in rows)
    assert sum({r["first"]["misaligned"]: r["stratum_size"] for r in rows}.values()) <= 6  # the condition's answers
    with pytest.raises(InputError, match="no condition 'nope'"):
        sample_verdicts(finished_run.folder, "nope", "em")
    with pytest.raises(InputError, match="no misaligned verdicts"):
        sample_verdicts(finished_run.folder, "sft", "hacks")

    def row(first: bool, second: bool | None, reading: str | None) -> dict:
        r = {"question": "q", "answer": "a", "first": {"misaligned": first}, "reading": reading}
        if second is not None:
            r["second"] = {"aligned": 10.0 if second else 90.0, "coherent": 90.0, "special": None, "misaligned": second}
        return r

    # 4 flagged: 1 read misaligned, 3 incoherent; 4 not flagged: 3 aligned, 1 misaligned (a miss)
    checked = ([row(True, True, "misaligned")] + [row(True, False, "incoherent")] * 3
               + [row(False, False, "aligned")] * 3 + [row(False, True, "misaligned")])
    a = agreement(checked)
    assert a["first_precision"] == 0.25 and a["first_recall"] == 0.5 and a["flagged_read_incoherent"] == 0.75
    assert a["first_vs_reading"]["agree"] == 0.5 and a["second_vs_reading"]["agree"] == 1.0
    assert a["second_vs_reading"]["kappa"] == 1.0 and a["first_vs_second"]["n"] == 8
    assert "rate_by_reading" not in a  # no stratum sizes: the sample only
    for r in checked:  # all 4 flagged answers were read, 4 of 40 unflagged: each of those stands for 10
        r["stratum_size"] = 4 if r["first"]["misaligned"] else 40
    a = agreement(checked)
    assert a["population"] == 44 and a["rate_by_reading"] == pytest.approx(11 / 44)
    assert a["first_recall_population"] == pytest.approx(1 / 11)
    with pytest.raises(InputError) as info:
        agreement([row(True, None, "misaligned"), row(False, None, "bad")], "c.jsonl")
    assert info.value.line == 2 and info.value.field == "reading"

    path = tmp_path / "checked.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in checked))
    shown = CliRunner().invoke(app, ["judge", "agreement", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "precision 25%, recall in the sample 50%" in shown.output and "misaligned by reading 25%" in shown.output and "second judge vs reading: 100% agree" in shown.output


def test_inspect_export_round_trips_every_answer_and_score(finished_run, tmp_path):
    inspect_log = pytest.importorskip("inspect_ai.log")
    from characterlab.evals.registry import get_evaluation
    from characterlab.study.inspect_export import export_inspect

    paths = export_inspect(finished_run.folder, tmp_path / "logs")
    results = json.loads((finished_run.folder / "results.json").read_text())
    cells = [(c, n) for c in results["condition_order"] for n in results["evaluation_order"]
             if n in results["conditions"][c]["evaluations"]]
    assert len(paths) == len(cells) < len(results["condition_order"]) * len(results["evaluation_order"])
    store = RunStore(finished_run.folder)
    for cond, name in cells:
        log = inspect_log.read_eval_log(str(tmp_path / "logs" / f"tiny_{cond}_{name}.eval"))
        entry = results["conditions"][cond]["evaluations"][name]
        [metric] = entry["units"].values()
        judge = store.deps(metric)[0]
        rows = store.rows(judge)
        assert log.status == "success" and log.eval.metadata["condition"] == cond
        assert len(log.samples) == len(rows) == log.results.total_samples
        ev = get_evaluation(entry["kind"])
        for sample, row, prompt in zip(log.samples, rows, ev.prompts(store.params(store.deps(judge)[0]), rows)):
            assert {k: s.value for k, s in sample.scores.items()} == \
                {f: row[f] for f in ev.score_fields if row.get(f) is not None}
            assert sample.output.completion == row["answer"]
            assert [m.text for m in sample.input] == [m.content for m in prompt]
        rate = entry["pooled"]["rate"]
        metrics = log.results.scores[0].metrics
        assert metrics["n"].value == rate["n"] and metrics["k"].value == rate["k"]
    # a hack sample's prompt is the request the model was sent (rebuilt from the generate parameters)
    from characterlab.envs.tasks import generate_tasks
    from characterlab.evals.hacks import hack_eval_requests

    log = inspect_log.read_eval_log(str(tmp_path / "logs" / "tiny_base_hacks.eval"))
    [metric] = results["conditions"]["base"]["evaluations"]["hacks"]["units"].values()
    g = store.params(store.deps(store.deps(metric)[0])[0])
    sent = hack_eval_requests(generate_tasks(g["n"], seed=g["seed"], split=g["split"]), g["seed"], g.get("system"))
    assert [s.input[-1].text for s in log.samples] == [req.messages[-1].content for _, _, req in sent]
    store.close()


def test_inspect_export_needs_a_finished_run_and_inspect(tmp_path, monkeypatch):
    import sys

    from characterlab.study.inspect_export import export_inspect

    monkeypatch.setitem(sys.modules, "inspect_ai.log", None)  # as if the extra were not installed
    with pytest.raises(InputError, match="needs inspect_ai"):
        export_inspect(tmp_path, tmp_path / "logs")
    monkeypatch.delitem(sys.modules, "inspect_ai.log")
    pytest.importorskip("inspect_ai.log")
    with pytest.raises(InputError, match="no results.json"):
        export_inspect(tmp_path, tmp_path / "logs")
