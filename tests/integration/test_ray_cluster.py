"""A study on a real two-node Ray cluster (``ray start`` twice on 127.0.0.1), one worker SIGKILLed
mid-unit (issue 44, item 3): the shipped check ``bench/ray_cluster_check.py`` run as a user would,
on the tests' tiny model. Slow: two Ray nodes and fresh workers that import torch."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHECK = Path(__file__).resolve().parents[2] / "bench" / "ray_cluster_check.py"


def test_a_worker_killed_mid_unit_is_retried_and_nothing_is_lost_or_duplicated(tiny_model_dir, tmp_path):
    pytest.importorskip("ray")
    proc = subprocess.run([sys.executable, str(CHECK), "--model", str(tiny_model_dir), "--out", str(tmp_path / "run"),
                           "--timeout", "400"], capture_output=True, text=True, timeout=480)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["ok"] and proc.returncode == 0, (summary["problems"], proc.stderr[-3000:])
    assert summary["nodes"] == ["head", "second"] and set(summary["units_per_node"]) == {"head", "second"}
    assert summary["killed"]["unit"].startswith("train-") and summary["ray_retries"] >= 1
    assert summary["units"] == sum(summary["units_per_node"].values()) == 8
