"""Hostile programs in the sandbox: each is contained, reported, and bounded in time."""

import os
import shutil
import time

import pytest

from characterlab.envs.sandbox import Sandbox, SandboxLimits


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(SandboxLimits(timeout_s=3, memory_mb=512, max_processes=32))


def run(sandbox, source):
    t0 = time.monotonic()
    result = sandbox.run(["python", "-E", "-s", "main.py"], {"main.py": source})
    assert time.monotonic() - t0 < 20  # bounded, whatever the program does
    return result


def test_isolation_is_bubblewrap_where_installed(sandbox):
    if shutil.which("bwrap"):
        assert sandbox.isolation == "bwrap"


def test_normal_program(sandbox):
    r = run(sandbox, "print('hi')")
    assert r.status == "ok" and r.exit_code == 0 and r.stdout.strip() == "hi"


@pytest.mark.parametrize("source", ["while True: pass", "import time\ntime.sleep(60)"])
def test_infinite_loops_time_out(sandbox, source):
    assert run(sandbox, source).status == "timeout"


def test_memory_bomb(sandbox):
    assert run(sandbox, "x = bytearray(4 * 1024 ** 3)").status == "memory"


def test_fork_bomb_is_contained(sandbox):
    r = run(sandbox, "import os\nwhile True:\n    os.fork()\n")
    assert r.status in ("timeout", "error", "killed")
    # the host can still start processes
    assert os.system("true") == 0


def test_no_network(sandbox):
    r = run(sandbox, "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\n")
    assert r.status == "error"


@pytest.mark.skipif(not shutil.which("bwrap"), reason="filesystem isolation needs bubblewrap")
def test_writes_outside_its_folder_fail(sandbox, tmp_path):
    target = tmp_path / "escaped.txt"
    r = run(sandbox, f"open({str(target)!r}, 'w').write('x')\n")
    assert r.status == "error" and not target.exists()
    r = run(sandbox, "open('/usr/evil', 'w')\n")
    assert r.status == "error" and not os.path.exists("/usr/evil")


def test_signals_do_not_reach_the_caller(sandbox):
    import subprocess

    bystander = subprocess.Popen(["sleep", "30"])  # a process of ours the program would love to kill
    try:
        run(sandbox, f"import os, signal\nfor pid in (os.getppid(), 1, -1, {bystander.pid}):\n    try:\n"
                     "        os.kill(pid, signal.SIGKILL)\n    except Exception as e:\n        print(e)\n"
                     "os.killpg(0, signal.SIGKILL)\n")
        assert bystander.poll() is None  # still running: nothing outside the sandbox was signalled
    finally:
        bystander.kill()
        bystander.wait()


def test_output_flood_is_capped(sandbox):
    r = run(sandbox, "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n")
    assert len(r.stdout) <= 70_000 and r.status in ("timeout", "killed", "error")


@pytest.mark.skipif(not shutil.which("bwrap"), reason="the disk cap needs bubblewrap's tmpfs")
def test_disk_filling_is_capped(sandbox):
    r = run(sandbox, "i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'x' * 1_000_000)\n    i += 1\n")
    assert r.status == "error" and "No space left" in r.stderr


def test_files_are_copied_in(sandbox):
    r = sandbox.run(["python", "-E", "-s", "main.py"], {"main.py": "print(open('data/x.txt').read())",
                                                         "data/x.txt": "payload"})
    assert r.status == "ok" and r.stdout.strip() == "payload"


def _memory_cgroup_available() -> bool:
    from characterlab.envs.sandbox import _RunCgroups

    cg = _RunCgroups(8, 64, enabled=os.geteuid() == 0)
    try:
        return cg.memory is not None
    finally:
        cg.kill_all_and_remove()


@pytest.mark.skipif(os.geteuid() != 0 or not _memory_cgroup_available(), reason="needs root and a memory cgroup")
def test_memory_cap_holds_for_the_whole_run_not_each_process():
    from characterlab.envs.sandbox import Sandbox, SandboxLimits

    forks = ("import os, time\nkids = []\nfor i in range(6):\n    pid = os.fork()\n    if pid == 0:\n"
             "        b = bytearray(150 * 1024 * 1024)\n        for j in range(0, len(b), 4096):\n            b[j] = 1\n"
             "        time.sleep(1.0)\n        os._exit(0)\n    kids.append(pid)\n"
             "print('all-alive' if all(os.waitpid(p, 0)[1] == 0 for p in kids) else 'some-died')\n")
    capped = Sandbox(SandboxLimits(memory_mb=256, timeout_s=20)).run(["python", "-E", "-s", "m.py"], {"m.py": forks})
    assert "all-alive" not in capped.stdout and capped.status == "memory"  # 6 x 150 MB > 256 MB in all
    roomy = Sandbox(SandboxLimits(memory_mb=2048, timeout_s=20)).run(["python", "-E", "-s", "m.py"], {"m.py": forks})
    assert roomy.status == "ok" and "all-alive" in roomy.stdout
