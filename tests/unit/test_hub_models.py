"""Hub models when the user names them (issue 44 item 4): an ``hf:`` id downloads on first use unless
offline (``HF_HUB_OFFLINE=1`` or ``--offline``); offline and not cached, a command fails with one
line before any unit runs; ``embedded`` and folders never reach the hub.

Nothing here reaches a hub or loads a model: the cache is a folder made in the test, and the hub's
download functions are replaced by recorders.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from characterlab.errors import InputError
from characterlab.models.hub import check_hub_models, load_pretrained, local_copy
from characterlab.study.executors import ExecutionReport

ABSENT = "characterlab-test/absent"
STUDY = ("name: hub\nmodel: {model}\nconditions: [{{name: base}}]\n"
         "evaluations:\n  - {{name: h, kind: hacks, n: 2}}\n")


class HubCalls:
    """Stands in for huggingface_hub's downloads: records each call, downloads nothing."""

    def __init__(self):
        self.calls: list[tuple] = []

    def hf_hub_download(self, repo_id, filename, **kwargs):
        self.calls.append(("hf_hub_download", repo_id, filename))
        return "/nowhere/config.json"


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache of the test's own, and a cache of characterlab's."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("CHARACTERLAB_CACHE", str(tmp_path / "cache"))
    return cache


@pytest.fixture
def hub(monkeypatch) -> HubCalls:
    import huggingface_hub

    calls = HubCalls()
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", calls.hf_hub_download)
    return calls


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


class RecordingExecutor:
    """Stands in for the executor: notes that it was reached and runs no unit."""

    def __init__(self, hub: HubCalls | None = None):
        self.hub = hub
        self.hub_calls_before: int | None = None

    def run(self, plan, store) -> ExecutionReport:
        self.hub_calls_before = len(self.hub.calls) if self.hub else 0
        return ExecutionReport(skipped=[u.key for u in plan.ordered()])


def cache_model(cache: Path, repo_id: str, files: dict[str, str]) -> Path:
    """A snapshot in the Hugging Face cache's layout (refs/main -> snapshots/<commit>/...)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    for name, text in files.items():
        (snap / name).write_text(text)
    return snap


WHOLE = {"config.json": "{}", "model.safetensors": "w", "tokenizer.json": "{}"}


def study_file(tmp_path: Path, model: str) -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(STUDY.format(model=model))
    return path


def cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    """The console entry point in this process (so the fakes apply): exit code and stderr."""
    from characterlab.cli import main

    monkeypatch.setattr(sys, "argv", ["characterlab", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code, capsys.readouterr().err


# -- offline: one line before any unit -----------------------------------------------------------

def test_run_offline_and_not_cached_fails_in_one_line_before_any_unit(tmp_path, monkeypatch, capsys, hub):
    executor = RecordingExecutor()
    monkeypatch.setattr("characterlab.study.runner.make_executor", lambda *a, **k: executor)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = cli(monkeypatch, capsys, "run", study_file(tmp_path, f"hf:{ABSENT}"), "--out", tmp_path / "run")
    assert code == 2
    assert err.count("\n") == 1 and f"'hf:{ABSENT}'" in err and f"hf download {ABSENT}" in err
    assert "HF_HUB_OFFLINE=1" in err and "--offline" not in err
    assert executor.hub_calls_before is None  # the executor was never reached
    assert not (tmp_path / "run").exists()  # nor was a run folder made
    assert hub.calls == []


def test_offline_flag_wins_over_an_unset_env(tmp_path, monkeypatch, capsys, hub, online):
    executor = RecordingExecutor()
    monkeypatch.setattr("characterlab.study.runner.make_executor", lambda *a, **k: executor)
    code, err = cli(monkeypatch, capsys, "run", study_file(tmp_path, f"hf:{ABSENT}"), "--out", tmp_path / "run",
                    "--offline")
    assert code == 2 and err.count("\n") == 1
    assert "--offline forbids" in err and "drop --offline" in err and f"hf download {ABSENT}" in err
    assert executor.hub_calls_before is None and not (tmp_path / "run").exists()
    assert hub.calls == []


@pytest.mark.parametrize("command", [
    ["generate", "-p", "hi"],
    ["eval", "hacks", "--n", "2", "--out", "{tmp}/ev"],
    ["eval", "nem", "--out", "{tmp}/nem"],
    ["train", "sft", "--data", "{tmp}/data.jsonl", "--out", "{tmp}/adapter"],
])
def test_single_commands_check_the_model_before_any_work(command, tmp_path, monkeypatch, capsys, hub, online):
    args = [a.format(tmp=tmp_path) for a in command]
    code, err = cli(monkeypatch, capsys, *args, "--model", f"hf:{ABSENT}", "--offline")
    assert code == 2 and err.count("\n") == 1 and f"'hf:{ABSENT}'" in err and "--offline forbids" in err
    assert hub.calls == []
    assert not any(tmp_path.glob("ev*")) and not (tmp_path / "nem").exists() and not (tmp_path / "adapter").exists()


def test_eval_offline_does_not_remove_the_run_it_would_overwrite(tmp_path, monkeypatch, capsys, hub):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    old = tmp_path / "ev"
    old.mkdir()
    (old / "study.yaml").write_text("name: other\n")
    code, err = cli(monkeypatch, capsys, "eval", "hacks", "--n", "2", "--out", old, "--overwrite",
                    "--model", f"hf:{ABSENT}")
    assert code == 2 and f"'hf:{ABSENT}'" in err
    assert (old / "study.yaml").read_text() == "name: other\n"


def test_the_study_s_hf_judge_is_checked_too(tmp_path, monkeypatch, hub):
    from characterlab.study.plan import build_plan
    from characterlab.study.runner import plan_models
    from characterlab.study.spec import parse_study

    text = ("name: j\nmodel: embedded\njudge: hf:org/judge\nconditions: [{name: base}]\n"
            "evaluations:\n  - {name: e, kind: em, questions: builtin:em, samples: 1}\n")
    plan = build_plan(parse_study(text, tmp_path / "j.yaml"), tmp_path)
    assert "hf:org/judge" in plan_models(plan)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="'hf:org/judge'"):
        from characterlab.study.runner import check_models

        check_models(plan, offline=False)


# -- online: downloads on first use ---------------------------------------------------------------

def test_run_online_fetches_a_missing_model_before_any_unit(tmp_path, monkeypatch, hub, online):
    from characterlab.study.runner import run_study

    executor = RecordingExecutor(hub)
    monkeypatch.setattr("characterlab.study.runner.make_executor", lambda *a, **k: executor)
    run_study(str(study_file(tmp_path, f"hf:{ABSENT}")), tmp_path / "run", progress=False)
    assert hub.calls == [("hf_hub_download", ABSENT, "config.json")]
    assert executor.hub_calls_before == 1  # fetched before the executor started


def test_online_a_missing_model_downloads_when_loaded(monkeypatch, online):
    calls: list[tuple[str, bool]] = []

    def from_pretrained(path, local_files_only=False, **kwargs):
        calls.append((path, local_files_only))
        if local_files_only:
            raise OSError("not in the cache")
        return "model"

    assert load_pretrained(from_pretrained, ABSENT, dtype="x") == "model"
    assert calls == [(ABSENT, True), (ABSENT, False)]


def test_load_local_model_downloads_online_and_refuses_offline(monkeypatch):
    """The real loader's wiring: transformers' from_pretrained asked for local files first, then,
    online, for a download; offline, one line naming the model instead."""
    from transformers import AutoTokenizer

    from characterlab.models.local import load_local_model
    from characterlab.models.refs import parse_model_ref

    class Downloaded(Exception):
        pass

    calls: list[bool] = []

    def from_pretrained(path, local_files_only=False, **kwargs):
        calls.append(local_files_only)
        if local_files_only:
            raise OSError(f"{path} is not in the cache")
        raise Downloaded(path)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", from_pretrained)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(Downloaded):
        load_local_model(parse_model_ref(f"hf:{ABSENT}"))
    assert calls == [True, False]
    calls.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError) as e:
        load_local_model(parse_model_ref(f"hf:{ABSENT}"))
    assert calls == [True] and "\n" not in str(e.value) and f"hf download {ABSENT}" in str(e.value)


def test_offline_a_load_never_asks_for_a_download(monkeypatch):
    calls: list[bool] = []

    def from_pretrained(path, local_files_only=False, **kwargs):
        calls.append(local_files_only)
        raise OSError("not in the cache")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(OSError):
        load_pretrained(from_pretrained, ABSENT, offline=True)
    assert calls == [True]


def test_a_cached_model_loads_without_asking_the_hub(monkeypatch, online):
    calls: list[bool] = []

    def from_pretrained(path, local_files_only=False, **kwargs):
        calls.append(local_files_only)
        return "model"

    load_pretrained(from_pretrained, ABSENT)
    assert calls == [True]


def test_a_wrong_id_online_fails_in_one_line(monkeypatch, online):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def hf_hub_download(repo_id, filename, **kwargs):
        raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub.\nmore")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    with pytest.raises(InputError) as e:
        check_hub_models([f"hf:{ABSENT}"])
    assert "\n" not in str(e.value) and f"'hf:{ABSENT}' could not be fetched" in str(e.value)


# -- the cache, folders and embedded --------------------------------------------------------------

def test_a_cached_model_passes_offline_and_a_partial_one_does_not(empty_hub_cache, hub):
    snap = cache_model(empty_hub_cache, "org/whole", WHOLE)
    cache_model(empty_hub_cache, "org/tokenizer-only", {"config.json": "{}", "tokenizer.json": "{}"})
    check_hub_models(["hf:org/whole"], offline=True)
    assert local_copy("org/whole") == str(snap)
    assert local_copy("org/tokenizer-only") == "org/tokenizer-only"
    with pytest.raises(InputError, match="'hf:org/tokenizer-only'"):
        check_hub_models(["hf:org/tokenizer-only"], offline=True)
    assert hub.calls == []


def test_a_sharded_model_needs_every_shard(empty_hub_cache):
    index = json.dumps({"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}})
    snap = cache_model(empty_hub_cache, "org/sharded", {"config.json": "{}", "tokenizer_config.json": "{}",
                                                      "model.safetensors.index.json": index,
                                                      "model-1.safetensors": "w"})
    with pytest.raises(InputError):
        check_hub_models(["hf:org/sharded"], offline=True)
    (snap / "model-2.safetensors").write_text("w")
    check_hub_models(["hf:org/sharded"], offline=True)


def test_embedded_openai_and_folders_never_reach_the_hub(tmp_path, monkeypatch, online):
    import huggingface_hub

    def refuse(*a, **k):
        raise AssertionError("the hub was asked")

    for name in ("hf_hub_download", "snapshot_download", "try_to_load_from_cache"):
        monkeypatch.setattr(huggingface_hub, name, refuse)
    (tmp_path / "model").mkdir()
    check_hub_models(["embedded", "openai:gpt-x", f"hf:{tmp_path / 'model'}"], offline=False)
    check_hub_models(["embedded", f"hf:{tmp_path / 'model'}"], offline=True)
    assert local_copy(str(tmp_path / "model")) == str(tmp_path / "model")


def test_embedded_study_never_reaches_the_hub(tmp_path, monkeypatch, online):
    import huggingface_hub

    from characterlab.study.runner import run_study

    def refuse(*a, **k):
        raise AssertionError("the hub was asked")

    for name in ("hf_hub_download", "snapshot_download", "try_to_load_from_cache"):
        monkeypatch.setattr(huggingface_hub, name, refuse)
    executor = RecordingExecutor()
    monkeypatch.setattr("characterlab.study.runner.make_executor", lambda *a, **k: executor)
    run_study(str(study_file(tmp_path, "embedded")), tmp_path / "run", progress=False)
    assert executor.hub_calls_before == 0  # reached the executor with no hub call on the way


def test_a_missing_folder_is_named_not_looked_up(tmp_path, hub, online):
    with pytest.raises(InputError, match="neither a folder that exists nor a Hugging Face hub id"):
        check_hub_models([f"hf:{tmp_path / 'no' / 'such' / 'model'}"])
    assert hub.calls == []
