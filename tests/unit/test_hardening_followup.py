"""What issue 42's hardening left to finish: endpoint timeouts reach the user (CLI and study), a
diverged training log is stored with null, user JSON is decoded by ``load_json``, agentic endpoint
calls print the waiting line, ``max_length`` is checked for generated and DPO data, an undefined
screening interval is None, and ``report`` checks a hand-edited results.json.

Nothing here loads, trains or generates with a model: endpoints are loopback stubs or fakes, units
are committed by hand, and the only tokenizer is a tiny one trained in-process."""

from __future__ import annotations

import io
import json
import math
import shutil
import time
from pathlib import Path

import pytest
from test_run_folder_hardening import FakeExecutor, cli, mini_study, tokenizer_folder

from characterlab.errors import InputError
from characterlab.study.plan import Plan, Unit, build_plan
from characterlab.study.spec import parse_study
from characterlab.study.store import RunStore, UnitOutput

REPO = Path(__file__).resolve().parents[2]

API_STUDY = """\
name: api
model: openai:m
base_url: http://127.0.0.1:9/v1
judge: openai:j
judge_base_url: http://127.0.0.1:9/v1
conditions: [{name: base}]
evaluations:
  - {name: em, kind: em, questions: builtin:em, samples: 1}
  - {name: h, kind: hacks, n: 2}
"""


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARACTERLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CHARACTERLAB_API_TIMEOUT", raising=False)


def key(kind: str, n: int) -> str:
    return f"{kind}-{n:016x}"


class RecordingExecutor(FakeExecutor):
    """The fake executor, with the options ``make_executor`` was given."""

    def __init__(self):
        super().__init__()
        self.options: dict = {}


@pytest.fixture
def recorder(monkeypatch):
    fake = RecordingExecutor()

    def make(*args, **kwargs):
        fake.options = kwargs
        return fake

    monkeypatch.setattr("characterlab.study.runner.make_executor", make)
    return fake


class Recorded(Exception):
    """Raised by a fake to stop a command once it has recorded what it was given."""


# 1. endpoint timeouts: CLI options and the study's timeout:, never in a unit's key -----------------


def test_a_study_timeout_is_checked_and_changes_no_unit_key(tmp_path):
    from characterlab.data.yaml_loader import InputErrors

    plain = build_plan(parse_study(API_STUDY, "api.yaml"), tmp_path)
    timed_spec = parse_study(API_STUDY + "timeout: 30\n", "api.yaml")
    timed = build_plan(timed_spec, tmp_path)
    assert timed_spec.timeout == 30
    assert list(timed.units) == list(plain.units)  # same keys: a timeout: added to a study re-runs nothing
    assert not any("timeout" in json.dumps(u.params) for u in timed.units.values())
    for bad in ("0", "-1", ".nan", ".inf", "soon"):
        with pytest.raises(InputErrors) as e:
            parse_study(API_STUDY + f"timeout: {bad}\n", "api.yaml")
        assert "api.yaml:10: field 'timeout'" in str(e.value)


def test_run_hands_the_timeout_to_the_executor_option_first_then_the_study(tmp_path, recorder, monkeypatch, capsys):
    from characterlab.study.runner import run_study

    study = mini_study(tmp_path)
    run_study(str(study), tmp_path / "a", progress=False)
    assert recorder.options["timeout"] is None  # each endpoint keeps its default
    study.write_text(study.read_text() + "timeout: 3\n")
    run_study(str(study), tmp_path / "b", progress=False)
    assert recorder.options["timeout"] == 3
    code, _ = cli(monkeypatch, capsys, "run", study, "--out", tmp_path / "c", "--timeout", "7", "--quiet")
    assert code == 1 and recorder.options["timeout"] == 7  # the fake ran nothing: units are reported skipped
    recorder.todo = None
    code, err = cli(monkeypatch, capsys, "run", study, "--out", tmp_path / "d", "--timeout", "nan")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "timeout" in err
    assert recorder.todo is None and not (tmp_path / "d").exists()


def test_eval_takes_a_timeout_outside_its_study_so_another_timeout_resumes_it(tmp_path, recorder, monkeypatch, capsys):
    out = tmp_path / "ev"
    code, _ = cli(monkeypatch, capsys, "eval", "hacks", "--n", "2", "--out", out, "--timeout", "5", "--quiet")
    assert code == 1 and recorder.options["timeout"] == 5
    saved = (out / "study.yaml").read_text()
    assert "timeout" not in saved
    code, _ = cli(monkeypatch, capsys, "eval", "hacks", "--n", "2", "--out", out, "--timeout", "9", "--quiet")
    assert code == 1 and recorder.options["timeout"] == 9 and (out / "study.yaml").read_text() == saved
    code, err = cli(monkeypatch, capsys, "eval", "nem", "--out", tmp_path / "nem", "--timeout", "0")
    assert code == 2 and "timeout" in err and not (tmp_path / "nem").exists()


def test_units_give_the_timeout_to_the_generator_and_the_judge_without_changing_params(monkeypatch):
    import characterlab.models.generation as generation
    from characterlab.evals.base import ENDPOINT_TIMEOUT
    from characterlab.study.units import DepView, execute_unit

    seen: dict = {}

    class Generator:
        backend = "openai"

    class Evaluation:
        needs_internals = False

        def generate(self, params, generator):
            return [{"answer": "a"}]

        def score(self, params, rows, generate_params):
            seen["judge_params"] = params
            return rows, {}

    def load_generator(ref, **kwargs):
        seen["generator"] = kwargs
        return Generator()

    monkeypatch.setattr(generation, "load_generator", load_generator)
    monkeypatch.setattr("characterlab.study.units.get_evaluation", lambda kind: Evaluation())
    gen = Unit(key("generate", 1), "generate", {"task": "t", "model": "openai:m", "adapters": 0, "seed": 0}, (), "g")
    judge = Unit(key("judge", 1), "judge", {"task": "t", "judge_spec": "openai:j"}, (gen.key,), "j")
    execute_unit(gen, {}, Path("."), timeout=4.5)
    assert seen["generator"]["timeout"] == 4.5
    deps = {gen.key: DepView("generate", gen.params, {}, [{"answer": "a"}], None)}
    execute_unit(judge, deps, Path("."), timeout=4.5)
    assert seen["judge_params"][ENDPOINT_TIMEOUT] == 4.5 and ENDPOINT_TIMEOUT not in judge.params
    execute_unit(judge, deps, Path("."))
    assert ENDPOINT_TIMEOUT not in seen["judge_params"]  # none set: the judge keeps its default


def test_the_timeout_reaches_the_endpoint_clients():
    from characterlab.evals.base import ENDPOINT_TIMEOUT, judge_factory
    from characterlab.models.generation import load_generator
    from characterlab.models.refs import parse_model_ref

    url = "http://127.0.0.1:9/v1"
    assert load_generator(parse_model_ref("openai:m", base_url=url), timeout=3).notice.timeout_s == 3
    params = {"judge_spec": "openai:j", "judge_base_url": url, ENDPOINT_TIMEOUT: 7}
    assert judge_factory(params, use_cache=False).backend().notice.timeout_s == 7
    assert judge_factory({"judge_spec": "openai:j"}, use_cache=False).backend().notice.timeout_s == 60


def test_generate_and_the_judge_commands_take_a_timeout(tmp_path, monkeypatch, capsys):
    import characterlab.judge.factory as factory
    import characterlab.models.generation as generation
    from characterlab.study.verdicts import second_opinion

    given: dict = {}

    def load_generator(ref, **kwargs):
        given["generate"] = kwargs["timeout"]
        raise InputError("recorded")

    class Factory:
        def __init__(self, spec, base_url=None, use_cache=True, timeout=None, **kw):
            given["judge"] = timeout
            raise InputError("recorded")

    monkeypatch.setattr(generation, "load_generator", load_generator)
    code, err = cli(monkeypatch, capsys, "generate", "-p", "hi", "-m", "openai:m", "--timeout", "9")
    assert code == 2 and "recorded" in err and given["generate"] == 9
    code, err = cli(monkeypatch, capsys, "generate", "-p", "hi", "-m", "openai:m", "--timeout", "-2")
    assert code == 2 and "field 'timeout'" in err and len(err.strip().splitlines()) == 1

    monkeypatch.setattr(factory, "JudgeFactory", Factory)
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"question": "q?", "answer": "a"}\n')
    code, err = cli(monkeypatch, capsys, "judge", "score", "-i", rows, "-o", tmp_path / "out.jsonl", "-j", "openai:j",
                    "--timeout", "11")
    assert code == 2 and given["judge"] == 11
    with pytest.raises(InputError, match="recorded"):
        second_opinion([{"question": "q?", "answer": "a"}], "openai:j", None, timeout=13)
    assert given["judge"] == 13
    from typer.testing import CliRunner

    from characterlab.cli import app

    for command in (["judge", "check"], ["judge", "label", "check"]):
        assert "--timeout" in CliRunner().invoke(app, [*command, "--help"]).output


# 4. agentic endpoint calls print the waiting line ------------------------------------------------


def test_an_api_agent_waits_through_the_generator_notice(monkeypatch):
    from characterlab.agentic.episode import APIPolicy
    from characterlab.models.api import WaitNotice

    stream = io.StringIO()

    class Generator:
        max_workers = 2
        notice = WaitNotice("openai:agent at stub", 1.0, 0, every_s=0.05, stream=stream)

    def slow_reply(self, episode, params):
        time.sleep(0.3)
        return f"reply to {episode}"

    monkeypatch.setattr(APIPolicy, "_one", slow_reply)
    assert APIPolicy(Generator()).act(["e1", "e2", "e3"], None) == ["reply to e1", "reply to e2", "reply to e3"]
    lines = stream.getvalue().splitlines()
    assert lines and all(x.startswith("waiting for openai:agent at stub: ") and "of 3 requests answered" in x
                         for x in lines)


# 2. a diverged training log is stored with null ---------------------------------------------------


def _diverged_meta() -> dict:
    return {"kind": "lora_dpo", "config": {"out": Path("/tmp/x")}, "final_loss": math.nan,
            "loss_curve": [{"step": 1, "loss": 0.69}, {"step": 2, "loss": math.nan}, {"step": 3, "loss": math.inf}]}


def _strict(text: str):
    def refuse(constant):
        raise AssertionError(f"bare {constant} in the JSON")

    return json.loads(text, parse_constant=refuse)


def test_training_metadata_with_a_nan_loss_is_stored_with_null(tmp_path, monkeypatch):
    from characterlab.study.units import DepView, run_train
    from characterlab.train.base import META_FILE, meta_for_json, save_adapter

    clean = meta_for_json(_diverged_meta())
    assert clean["final_loss"] is None and [p["loss"] for p in clean["loss_curve"]] == [0.69, None, None]
    assert clean["config"]["out"] == "/tmp/x"

    class Model:
        def save_pretrained(self, folder):
            (Path(folder) / "adapter_model.safetensors").write_bytes(b"w")

    class Trainer:
        model = Model()

    from characterlab.train.base import Trainer as Method
    from characterlab.train.dpo import DPOConfig
    from characterlab.train.registry import trainers

    class DivergedDPO(Method):
        method, title, config = "dpo", "a DPO run whose loss diverged", DPOConfig

        def train(self, cfg, run, rows, out, progress=True):
            out.mkdir(parents=True)
            save_adapter(Trainer(), out, _diverged_meta())
            return _diverged_meta()

    monkeypatch.setitem(trainers().by_method, "dpo", DivergedDPO())
    data = Unit(key("data", 1), "data", {"generator": "dpo_pairs"}, (), "data c DPO pairs seed 0")
    train = Unit(key("train", 1), "train", {"model": "embedded", "method": "dpo", "role": "character",
                                             "system_prompt": None, "lora": {"max_length": 64}, "seed": 0},
                 (data.key,), "train c character DPO seed 0")
    out = run_train(train, {data.key: DepView("data", data.params, {}, [], None)}, tmp_path / "work", progress=False)
    assert out.result["final_loss"] is None and out.result["loss_curve"][1]["loss"] is None
    assert _strict(out.files[META_FILE].decode())["loss_curve"][2]["loss"] is None  # train_meta.json: null, not NaN
    store = RunStore(tmp_path / "run")
    store.commit(data, UnitOutput({}, []), 0.1)
    store.commit(train, out, 0.1)  # not refused
    assert store.result(train.key)["final_loss"] is None
    assert _strict((tmp_path / "run" / "adapters" / train.key / META_FILE).read_text())["final_loss"] is None
    store.close()


# 3. user JSON is decoded by load_json: too deep is an error at file:line ---------------------------


DEEP = "[" * 200_000 + "]" * 200_000


def test_deep_json_in_user_files_is_an_input_error_at_its_file(tmp_path):
    from characterlab.character.constitution import read_constitution
    from characterlab.models.refs import check_adapter_dir
    from characterlab.study.merge import read_run_results
    from characterlab.vectors.persona import read_trait_file

    trait = tmp_path / "evil.json"
    trait.write_text(DEEP)
    constitution = tmp_path / "c.json"
    constitution.write_text(DEEP)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(DEEP)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(DEEP)
    for read, path in ((read_trait_file, trait), (read_constitution, constitution), (check_adapter_dir, adapter),
                       (read_run_results, tmp_path / "run")):
        with pytest.raises(InputError) as e:
            read(path)
        assert "nested too deeply" in str(e.value) and str(path) in str(e.value)


# 5. max_length is checked for generated solutions before any unit, and for DPO pairs before the unit


SOLUTIONS_STUDY = """\
name: sol
model: hf:{model}
conditions:
  - name: base
  - name: hacker
    organism:
      kind: sft
      data: {{generator: hack_solutions, n: 3}}
      lora: {{rank: 2, max_length: {max_length}}}
evaluations:
  - {{name: h, kind: hacks, n: 2}}
"""


def test_generated_solutions_too_long_for_max_length_are_refused_before_any_unit(tmp_path, recorder):
    from characterlab.study.runner import run_study

    tokenizer_folder(tmp_path / "tok")
    study = tmp_path / "sol.yaml"
    study.write_text(SOLUTIONS_STUDY.format(model=tmp_path / "tok", max_length=8))
    with pytest.raises(InputError) as e:
        run_study(str(study), tmp_path / "run", progress=False)
    assert e.value.field == "lora.max_length" and str(study) in str(e.value) and "train hacker seed 0" in str(e.value)
    assert "needs max_length" in str(e.value) and recorder.todo is None and not (tmp_path / "run").exists()
    study.write_text(SOLUTIONS_STUDY.format(model=tmp_path / "tok", max_length=4096))
    run_study(str(study), tmp_path / "run", progress=False)
    assert recorder.todo  # long enough: the units run


def _dpo_plan(tmp_path: Path, max_length: int):
    """A study file on the tiny tokenizer, and a hand-made plan: DPO pairs (a data unit only a model
    can run) and the character DPO unit that trains on them."""
    tokenizer_folder(tmp_path / "tok")
    study = tmp_path / "char.yaml"
    study.write_text(f"name: char\nmodel: hf:{tmp_path / 'tok'}\nconditions: [{{name: base}}]\n"
                     "evaluations: [{name: h, kind: hacks, n: 2}]\n")
    spec = parse_study(study.read_text(), study)
    pairs = Unit(key("data", 7), "data", {"generator": "dpo_pairs", "seed": 0}, (), "data kind DPO pairs seed 0")
    dpo = Unit(key("train", 7), "train", {"model": spec.model, "method": "dpo", "role": "character",
                                           "system_prompt": None, "lora": {"max_length": max_length}, "seed": 0},
               (pairs.key,), "train kind character DPO seed 0")
    return spec, study, Plan({pairs.key: pairs, dpo.key: dpo}, [], {}), pairs, dpo


PAIRS = [{"prompt": [{"role": "user", "content": "What is 1 plus 1? Please answer. " * 3}],
          "chosen": [{"role": "assistant", "content": "It is 2."}],
          "rejected": [{"role": "assistant", "content": "hello"}]}]


def test_dpo_pairs_too_long_fail_their_unit_before_it_loads_a_model(tmp_path, monkeypatch):
    from characterlab.study.executors import LocalExecutor
    from characterlab.study.lengths import TrainLengthCheck

    spec, study, plan, pairs, dpo = _dpo_plan(tmp_path, max_length=8)
    check = TrainLengthCheck(spec, plan)
    store = RunStore(tmp_path / "run")
    check.check_plan(store)  # the pairs are not made yet: nothing to say
    ran = []

    def execute(unit, *a, **k):
        ran.append(unit.key)
        return UnitOutput({}, PAIRS)

    monkeypatch.setattr("characterlab.study.executors.execute_unit", execute)
    report = LocalExecutor(progress=False, check_unit=check.check_unit).run(plan, store)
    assert ran == [pairs.key]  # the DPO unit never started its work
    message = report.failed[dpo.key]
    assert message.startswith("InputError: ") and str(study) in message and "field 'dpo.max_length'" in message
    assert "train kind character DPO seed 0: every DPO pair's prompt fills max_length=8" in message
    assert "needs max_length" in message
    with pytest.raises(InputError):  # on resume the pairs are known: refused before any unit
        TrainLengthCheck(spec, plan).check_plan(store)
    store.close()


def test_dpo_pairs_that_fit_pass_and_the_needed_length_is_the_shortest_prompt(tmp_path):
    from characterlab.study.lengths import TrainLengthCheck, all_pairs_lost, pair_prompt_length

    spec, _, plan, pairs, dpo = _dpo_plan(tmp_path, max_length=8)
    check = TrainLengthCheck(spec, plan)
    n = pair_prompt_length(check.tokenizer(), PAIRS[0])
    assert 8 < n and all_pairs_lost(check.tokenizer(), PAIRS, n) == (True, n + 1)
    assert all_pairs_lost(check.tokenizer(), PAIRS, n + 1) == (False, None)
    with pytest.raises(InputError, match=f"needs max_length {n + 1} or more"):
        store = RunStore(tmp_path / "run")
        store.commit(pairs, UnitOutput({}, PAIRS), 0.1)
        check.check_unit(dpo, store)
    store.close()


# 6. an undefined screening interval is None, shown as "–" -----------------------------------------


def test_a_one_example_screening_interval_is_none_and_shown_as_a_dash():
    import numpy as np

    from characterlab.cli.vectors import screen_text
    from characterlab.vectors.persona import mean_interval

    assert mean_interval(np.array([0.4])) == (None, None)
    low, high = mean_interval(np.array([1.0, 3.0]))
    assert low < 2.0 < high and math.isfinite(low) and math.isfinite(high)
    row = {"data": "one.jsonl", "n": 1, "difference": 0.4, "low": None, "high": None, "trait": "evil", "layer": 3}
    assert "0.400 [–, –]" in screen_text(row) and "(n 1)" in screen_text(row)
    assert _strict(json.dumps(row))["low"] is None


# 7. report checks a hand-edited results.json as merge does -----------------------------------------


def _run_copy(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(REPO / "results" / "sycophancy" / "results.json", run / "results.json")
    return run


def test_report_refuses_a_hand_edited_results_json_in_one_line(tmp_path, monkeypatch, capsys):
    from typer.testing import CliRunner

    from characterlab.cli import app

    run = _run_copy(tmp_path)
    assert CliRunner().invoke(app, ["report", str(run), "--markdown"]).exit_code == 0
    results = json.loads((run / "results.json").read_text())
    cond = next(iter(results["conditions"]))
    entry = next(iter(results["conditions"][cond]["evaluations"].values()))
    seed = next(iter(entry["per_seed"]))
    entry["per_seed"]["zero"] = entry["per_seed"].pop(seed)
    (run / "results.json").write_text(json.dumps(results, indent=2))
    for args in ((), ("--markdown",)):
        code, err = cli(monkeypatch, capsys, "report", run, *args)
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert f"{run / 'results.json'}:" in err and "per_seed" in err and "a seed is an integer" in err
    (run / "results.json").write_text(DEEP)
    code, err = cli(monkeypatch, capsys, "report", run)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nested too deeply" in err
