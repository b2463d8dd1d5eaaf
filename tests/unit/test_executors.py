"""Both executors keep the same books (issue 43, item 5): a failed unit's dependants are skipped and
reported, a failing ``check_unit`` fails its unit before any work, and every unit that ran has its
own peak memory in the run folder - measured in the Ray worker for Ray. Model-free: the units read a
chat file (``data`` units), so the Ray run costs only Ray's start."""

from __future__ import annotations

import io
import socket

import pytest

from characterlab.allocator import reset_peak_rss
from characterlab.data.chat_data import chat_data_hash
from characterlab.errors import InputError
from characterlab.study import executors
from characterlab.study.executors import LocalExecutor, PlainProgress, RayExecutor
from characterlab.study.params import FileData
from characterlab.study.plan import Plan, Unit
from characterlab.study.store import RunStore


def _plan(chat_file) -> Plan:
    """good -> after-good; broken (its file's hash is wrong) -> after-broken -> after-after;
    refused (check_unit raises) -> after-refused."""
    good = FileData(file=str(chat_file), sha256=chat_data_hash(chat_file), n=4).model_dump()
    broken = {**good, "sha256": "0" * 64}

    def unit(name, params, *deps):
        return Unit(f"data-{name}", "data", params, tuple(f"data-{d}" for d in deps), f"data {name}")

    units = [unit("good", good), unit("after-good", {**good, "n": 3}, "good"), unit("broken", broken),
             unit("after-broken", {**good, "n": 2}, "broken"), unit("after-after", {**good, "n": 1}, "after-broken"),
             unit("refused", {**good, "n": 5}), unit("after-refused", {**good, "n": 6}, "refused")]
    return Plan(units={u.key: u for u in units}, cells=[], labels={u.key: [u.label] for u in units})


def _refuse(unit, store):
    if unit.key == "data-refused":
        raise InputError("refused by the runner's check", field="lora.max_length")


@pytest.fixture(params=["local", "ray"])
def executor(request):
    if request.param == "ray":
        pytest.importorskip("ray")
        return RayExecutor(progress=True, check_unit=_refuse)
    return LocalExecutor(progress=True, check_unit=_refuse)


def test_both_executors_skip_dependants_of_failures_and_record_each_units_peak(executor, chat_file, tmp_path,
                                                                               monkeypatch):
    lines = io.StringIO()
    monkeypatch.setattr(executors, "plain_progress_wanted", lambda progress: progress)
    monkeypatch.setattr(executors, "PlainProgress", lambda total, reused: PlainProgress(total, reused, lines))
    plan = _plan(chat_file)
    store = RunStore(tmp_path / "run")
    report = executor.run(plan, store)
    assert sorted(report.run) == ["data-after-good", "data-good"]
    assert set(report.failed) == {"data-broken", "data-refused"}
    assert "data file changed" in report.failed["data-broken"] and "refused by the runner" in report.failed["data-refused"]
    assert sorted(report.skipped) == ["data-after-after", "data-after-broken", "data-after-refused"]
    assert store.rows("data-after-good") and len(store.rows("data-good")) == 4
    text = lines.getvalue()
    assert "study: 7 units to run, 0 reused" in text and "[7/7]" in text
    assert text.count(" skipped data ") == 3 and text.count(" FAILED data ") == 2 and text.count(" done data ") == 2
    peaks = {t["key"]: t["peak_rss_mb"] for t in store.unit_timings()}
    if reset_peak_rss():  # the kernel gives a per-unit window here (and so in a Ray worker on this machine)
        assert peaks["data-good"] and peaks["data-after-good"] and f"peak {peaks['data-good'] / 1024:.2f} GB" in text
    hosts = dict(store.db.execute("SELECT key, host FROM units WHERE status='done'"))
    where = " ray:" if isinstance(executor, RayExecutor) else socket.gethostname()  # a Ray unit names its node
    assert hosts and all(where in h for h in hosts.values()), hosts
    again = type(executor)(progress=False).run(plan, store)  # the failures run again; the finished are reused
    assert sorted(again.reused) == ["data-after-good", "data-good"] and set(again.failed) == {"data-broken"}
    assert sorted(again.skipped) == ["data-after-after", "data-after-broken"]
    store.close()


class _RefusingRay:
    """``ray.init`` as Ray 2.60 fails it against a cluster that wants a token this process lacks."""

    @staticmethod
    def init(**kwargs):
        try:
            raise RuntimeError("RPC error: InvalidAuthToken: Authentication token is missing or incorrect")
        except RuntimeError as e:
            raise ConnectionError(f"Failed to connect to Ray cluster at {kwargs['address']}") from e


def test_a_cluster_that_refuses_the_token_is_an_input_error_naming_the_fix():
    with pytest.raises(InputError, match="127.0.0.1:1.*RAY_AUTH_MODE=token"):
        RayExecutor(address="127.0.0.1:1", progress=False)._connect(_RefusingRay)
