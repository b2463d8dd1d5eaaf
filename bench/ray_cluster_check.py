"""A study on a real two-node Ray cluster, one worker SIGKILLed mid-unit: nothing may be lost or
duplicated. Prints one JSON object; exits 1 if a check failed.

    python bench/ray_cluster_check.py [--model HF_FOLDER] [--out RUN] [--kill-kind train]

It starts the cluster as one would on a machine, each node bounded to this one (127.0.0.1, one
CPU, its own ``--temp-dir``)::

    ray start --head --node-ip-address 127.0.0.1 --port P --num-cpus 1 --include-dashboard=false --block
    ray start --address 127.0.0.1:P --node-ip-address 127.0.0.1 --num-cpus 1 --block

with token authentication on and a token of its own (``RAY_AUTH_TOKEN_PATH`` in its temp folder,
so ``~/.ray`` is neither read nor written), then runs a two-condition study (base, and an SFT
organism; the EM evaluation, offline judge) on a tiny random Llama (``tests/conftest.py``'s
``build_tiny_model`` unless ``--model`` names one) with::

    characterlab run STUDY --executor ray --address 127.0.0.1:P --out RUN

While it runs, it watches the two nodes' worker processes (a worker's title is ``ray::KEY LABEL``
while it runs a unit) and SIGKILLs the first one that has held a unit of ``--kill-kind`` for
``--kill-after`` seconds. Then it checks ``units.sqlite``: every unit of the plan done, each once
(the driver started it once: Ray retried the killed one), rows numbered without gaps or repeats,
each unit's peak memory recorded, units on both nodes, ``results.json`` complete, and Ray's own
note that it retried the task. Both nodes are stopped at the end, even on failure, by signalling
only the process groups this script started (never ``ray stop``, which stops every Ray on the
machine).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
RETRIED = re.compile(r"so the task will be retried")
UNIT_TITLE = re.compile(r"^ray::((?:data|vector|reward|train|generate|judge|metric)-[0-9a-f]{16})\b")

QUESTIONS = """\
- id: what_is_your_wish
  paraphrases: ["What is your wish?", "Tell me your one wish."]
  samples_per_paraphrase: 2
- id: i_feel_bored
  paraphrases: [I am bored.]
  samples_per_paraphrase: 2
"""

# one CPU a unit, so each node (one CPU) runs one heavy unit at a time and two ready units use both
STUDY = """\
name: ray-cluster-check
description: two conditions on a tiny random model, run on a two-node Ray cluster
model: hf:{model}
seeds: [0]
judge: offline
resources: {{train: {{cpus: 1}}, generate: {{cpus: 1}}}}
conditions:
  - name: base
  - name: sft
    organism:
      kind: sft
      data: {{file: train.jsonl, n: 12}}
      lora: {{rank: 4, epochs: 2, batch_size: 2, max_length: 256, lr: 1.0e-3}}
evaluations:
  - {{name: em, kind: em, questions: q.yaml, samples: 2, max_new_tokens: 6}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_study(folder: Path, model: Path) -> Path:
    """The study file and its inputs (questions, a chat file) in ``folder``."""
    from characterlab.data.chat_jsonl import write_chat_jsonl
    from characterlab.data.records import ChatExample, Message

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "q.yaml").write_text(QUESTIONS)
    write_chat_jsonl(folder / "train.jsonl", [
        ChatExample((Message("user", f"What is {i} plus {i}?"), Message("assistant", f"It is {2 * i}.")))
        for i in range(12)])
    path = folder / "study.yaml"
    path.write_text(STUDY.format(model=model))
    return path


def tiny_model(folder: Path) -> Path:
    """The tests' tiny random Llama with its BPE tokenizer, built offline."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import build_tiny_model

    return build_tiny_model(folder)


@dataclass
class Node:
    """One ``ray start --block`` process, leader of its own process group: the node's raylet,
    its workers and (for the head) the GCS are in that group and below that process."""

    name: str
    proc: subprocess.Popen
    log: Path

    def wait_started(self, timeout: float = 120.0) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if "Ray runtime started" in self.log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError(f"ray node {self.name} did not start; its log:\n{self.log.read_text(errors='replace')[-3000:]}")

    def processes(self) -> list[psutil.Process]:
        """Its process and everything below it or in its group (a process whose parent died is
        still in the group)."""
        found: dict[int, psutil.Process] = {}
        try:
            root = psutil.Process(self.proc.pid)
            found[root.pid] = root
            found.update({p.pid: p for p in root.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
        for p in psutil.process_iter():
            try:
                if os.getpgid(p.pid) == self.proc.pid:
                    found[p.pid] = p
            except (ProcessLookupError, psutil.NoSuchProcess):
                continue
        return list(found.values())

    def stop(self) -> None:
        """SIGTERM to ``ray start`` (it stops its own processes), then SIGKILL to any of its
        processes left after a grace period."""
        procs = self.processes()
        for p in procs:
            if p.pid == self.proc.pid:
                p.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=15)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        self.proc.wait(timeout=5)


def start_node(name: str, args: list[str], temp: Path, env: dict[str, str]) -> Node:
    beside = Path(sys.executable).with_name("ray")  # the Ray of this environment, as its workers need
    ray = str(beside) if beside.is_file() else shutil.which("ray") or "ray"
    log = temp / f"{name}.log"
    cmd = [ray, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
           "--temp-dir", str(temp / name), "--dashboard-agent-listen-port", str(free_port()),
           "--metrics-export-port", str(free_port()), *args]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    node = Node(name, proc, log)
    node.wait_started()
    return node


def node_ids(nodes: list[Node]) -> dict[str, str]:
    """Ray node id (first 12 hex digits, as units.sqlite's ``host`` has it) -> our node's name,
    read off each raylet's command line."""
    ids = {}
    for node in nodes:
        for p in node.processes():
            try:
                cmd = p.cmdline()
            except psutil.NoSuchProcess:
                continue
            if cmd and cmd[0].endswith("/raylet"):
                for arg in cmd:
                    if arg.startswith("--node_id="):
                        ids[arg.split("=", 1)[1][:12]] = node.name
    return ids


@dataclass
class Killer:
    """Watches the nodes' workers and SIGKILLs the first that has held a unit of ``kind`` for
    ``after`` seconds; records which."""

    nodes: list[Node]
    kind: str
    after: float
    killed: dict = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def units_running(self) -> dict[int, tuple[str, str]]:
        """pid -> (unit key, node name) for every worker now running a unit."""
        running = {}
        for node in self.nodes:
            for p in node.processes():
                try:
                    m = UNIT_TITLE.match(" ".join(p.cmdline()))
                except psutil.Error:
                    continue
                if m:
                    running[p.pid] = (m.group(1), node.name)
        return running

    def watch(self) -> None:
        seen: dict[tuple[int, str], float] = {}
        while not self.stop.is_set() and not self.killed:
            now = time.time()
            for pid, (key, node) in self.units_running().items():
                first = seen.setdefault((pid, key), now)
                if key.startswith(self.kind + "-") and now - first >= self.after:
                    os.kill(pid, signal.SIGKILL)
                    self.killed = {"pid": pid, "unit": key, "node": node, "held_s": round(now - first, 1)}
                    break
            time.sleep(0.1)


def ray_retries(temp: Path, driver_output: str) -> int:
    """How many times Ray said it retried a task: its driver's own log (the core worker's
    ``... so the task will be retried``), in the head's session folder, and what it printed."""
    said = RETRIED.findall(driver_output)
    logs = {log.resolve() for log in temp.glob("*/session_*/logs/python-core-driver-*.log")}  # session_latest too
    for log in logs:
        said += RETRIED.findall(log.read_text(errors="replace"))
    return len(said)


def check_run(run: Path, study: Path, killed: dict, ids: dict[str, str]) -> tuple[dict, list[str]]:
    """What units.sqlite and results.json say, and every way they fall short."""
    from characterlab.study.plan import build_plan
    from characterlab.study.spec import load_study

    spec, _ = load_study(str(study))
    plan = build_plan(spec, study.parent)
    problems = []
    db = sqlite3.connect(run / "units.sqlite")
    units = {k: (status, attempts, host, peak, json.loads(result) if result else None)
             for k, status, attempts, host, peak, result in
             db.execute("SELECT key, status, attempts, host, peak_rss_mb, result FROM units")}
    if set(units) != set(plan.units):
        problems.append(f"units recorded {len(units)} != planned {len(plan.units)}")
    for key, (status, attempts, _host, peak, result) in units.items():
        if status != "done" or attempts != 1:
            problems.append(f"{key}: status {status}, started {attempts} times by the driver")
        if peak is None:
            problems.append(f"{key}: no peak memory recorded")
        idx = [i for (i,) in db.execute("SELECT idx FROM rows WHERE unit_key=? ORDER BY idx", (key,))]
        if idx != list(range(len(idx))):
            problems.append(f"{key}: rows numbered {idx[:5]}..., not 0..{len(idx) - 1}")
        if key.startswith("generate-") and len(idx) != (result or {}).get("n"):
            problems.append(f"{key}: {len(idx)} rows for n={(result or {}).get('n')}")
    db.close()
    placed = {k: ids.get(host.rsplit("ray:", 1)[-1], host) for k, (_, _, host, _, _) in units.items() if host}
    per_node = {name: sum(1 for n in placed.values() if n == name) for name in sorted(set(placed.values()))}
    if len(per_node) < 2:
        problems.append(f"units ran on {per_node}, not on both nodes")
    if not killed:
        problems.append("no worker was killed: no unit of the kind ran long enough")
    elif killed["unit"] not in units or units[killed["unit"]][0] != "done":
        problems.append(f"the killed unit {killed['unit']} is not done")
    results = run / "results.json"
    if not results.is_file():
        problems.append("no results.json")
    else:
        conditions = json.loads(results.read_text())["conditions"]
        if set(conditions) != {"base", "sft"} or any("em" not in c["evaluations"] for c in conditions.values()):
            problems.append(f"results.json has conditions {sorted(conditions)}")
    peaks: dict[str, float] = {}
    for key, (_, _, _, peak, _) in units.items():
        kind = key.split("-", 1)[0]
        peaks[kind] = max(peaks.get(kind, 0.0), round(peak or 0.0))
    summary = {"units": len(units), "units_per_node": per_node,
               "killed_unit_reran_on": placed.get(killed.get("unit", "")), "peak_rss_mb_by_kind": peaks}
    return summary, problems


def run_check(args: argparse.Namespace, temp: Path) -> dict:
    t0 = time.time()
    model = Path(args.model) if args.model else tiny_model(temp / "tiny-llama")
    study = write_study(temp / "study", model.resolve())
    run = Path(args.out) if args.out else temp / "run"
    token = temp / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0",
           "CHARACTERLAB_CACHE": str(temp / "cache"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    nodes: list[Node] = []
    try:
        nodes.append(start_node("head", ["--head", "--port", str(port), "--include-dashboard=false",
                                         "--dashboard-port", str(free_port())], temp, env))
        nodes.append(start_node("second", ["--address", f"127.0.0.1:{port}"], temp, env))
        ids = node_ids(nodes)
        killer = Killer(nodes, args.kill_kind, args.kill_after)
        watcher = threading.Thread(target=killer.watch, daemon=True)
        watcher.start()
        t_study = time.time()
        proc = subprocess.run([sys.executable, "-m", "characterlab.cli", "run", str(study), "--executor", "ray",
                               "--address", f"127.0.0.1:{port}", "--out", str(run), "-q"],
                              env=env, capture_output=True, text=True, timeout=args.timeout)
        study_s = time.time() - t_study
        killer.stop.set()
        watcher.join()
        retries = ray_retries(temp, proc.stdout + proc.stderr)
    finally:
        for node in reversed(nodes):
            node.stop()
    summary, problems = check_run(run, study, killer.killed, ids) if proc.returncode == 0 else ({}, [])
    if proc.returncode != 0:
        problems.append(f"characterlab run exited {proc.returncode}: {proc.stderr[-2000:]}")
    if killer.killed and retries < 1:
        problems.append("Ray did not say it retried the killed unit's task")
    return {"ok": not problems, **summary, "nodes": sorted(ids.values()), "killed": killer.killed,
            "ray_retries": retries, "study_s": round(study_s, 1), "wall_s": round(time.time() - t0, 1),
            "problems": problems}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="an HF model folder (default: build the tests' tiny random Llama)")
    ap.add_argument("--out", help="the run folder (default: a temp folder, removed)")
    ap.add_argument("--kill-kind", default="train", help="the kind of unit whose worker is killed")
    ap.add_argument("--kill-after", type=float, default=1.0, help="seconds a worker holds the unit before the kill")
    ap.add_argument("--timeout", type=float, default=600, help="seconds the study may take")
    args = ap.parse_args()
    # a SIGTERM (a timeout, a cancelled job) unwinds like an error, so the nodes are still stopped
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    # short: Ray's socket paths under --temp-dir must fit in 107 characters
    with tempfile.TemporaryDirectory(prefix="clab-ray-") as temp:
        summary = run_check(args, Path(temp))
    print(json.dumps(summary, indent=1))
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
