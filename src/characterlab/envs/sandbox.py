"""Run untrusted (model-written) code: bubblewrap isolation, rlimits, a process-group timeout.

Every execution of model-written code goes through :class:`Sandbox`. The program runs in a fresh
folder that holds only the files we copy in: they are bound read-only at ``/input`` and copied into
``/task``, a size-capped tmpfs, so a program can fill neither the host disk nor memory beyond the
cap. It sees the interpreter read-only, a capped private ``/tmp``, a read-only root, no network and
no other processes (bubblewrap ``--unshare-all``), and is bounded by rlimits (address space, CPU
seconds, file size, open files, processes) and a wall-clock timeout that kills its whole process
group. When we run as root, where RLIMIT_NPROC does not bind, a ``pids`` cgroup caps the number of
processes instead (fork bombs), and a ``memory`` cgroup caps the memory of the whole run, all its
processes together; without root, the memory cap is per process (RLIMIT_AS) and a program that
starts N processes can use N times it, which the sandbox says once on stderr. What comes back is its exit status and capped stdout/stderr:
nothing it writes leaves the sandbox any other way.

Without bubblewrap we fall back to ``unshare`` (network and pid namespaces) plus the same rlimits,
and say so once on stderr; without either, rlimits alone, said just as loudly.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

Status = Literal["ok", "timeout", "memory", "killed", "error"]
Isolation = Literal["auto", "bwrap", "unshare", "rlimits"]
TASK_DIR = "/task"
_warned: set[str] = set()


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0
    memory_mb: int = 1024
    max_processes: int = 64
    max_file_mb: int = 16
    max_open_files: int = 256
    max_output_bytes: int = 64_000
    max_disk_mb: int = 64  # each of /task and /tmp (tmpfs, so RAM) under bubblewrap


@dataclass
class SandboxResult:
    status: Status
    exit_code: int | None
    stdout: str
    stderr: str
    seconds: float
    isolation: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        print(f"characterlab sandbox WARNING: {message}", file=sys.stderr, flush=True)


def _interpreter_roots() -> list[str]:
    """Folders that hold the interpreter and its libraries (bound read-only into the sandbox)."""
    roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    roots.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    return sorted(r for r in roots if r not in ("/", "/usr"))


class _RunCgroups:
    """The ``pids`` and ``memory`` cgroups of one sandboxed run (cgroup v1 or v2; only root can make them).

    RLIMIT_AS bounds each process, so a program that forks could still take ``max_processes`` times
    the memory cap; the memory cgroup bounds the whole run (swap included where the kernel accounts
    it), and the kernel's OOM killer ends the run when it is reached.
    """

    V1 = Path("/sys/fs/cgroup")

    def __init__(self, max_pids: int, memory_mb: int, enabled: bool = True):
        self.pids: Path | None = None
        self.memory: Path | None = None
        if not enabled:
            return
        name = f"characterlab-{uuid.uuid4().hex[:12]}"
        limit = str(memory_mb * 1024 * 1024)
        v2 = self.V1 / "cgroup.controllers"
        if v2.is_file():  # unified hierarchy: one folder holds both limits
            self._enable_v2_controllers()
            path = self._make(self.V1 / name, "pids.max", str(max_pids))
            if path is not None and self._write(path / "memory.max", limit):
                self._write(path / "memory.swap.max", "0")
                self.memory = path
            self.pids = path
            return
        self.pids = self._make(self.V1 / "pids" / name, "pids.max", str(max_pids))
        self.memory = self._make(self.V1 / "memory" / name, "memory.limit_in_bytes", limit)
        if self.memory is not None:
            self._write(self.memory / "memory.memsw.limit_in_bytes", limit)  # absent without swap accounting

    @staticmethod
    def _write(path: Path, value: str) -> bool:
        try:
            path.write_text(value)
            return True
        except OSError:
            return False

    def _enable_v2_controllers(self) -> None:
        control = self.V1 / "cgroup.subtree_control"
        try:
            have = control.read_text().split()
        except OSError:
            return
        for c in ("pids", "memory"):
            if c not in have:
                self._write(control, f"+{c}")

    def _make(self, path: Path, knob: str, value: str) -> Path | None:
        try:
            if not os.access(path.parent, os.W_OK):
                return None
            path.mkdir()
        except OSError:
            return None
        if (path / knob).exists() and self._write(path / knob, value):
            return path
        try:
            path.rmdir()
        except OSError:
            pass
        return None

    @property
    def folders(self) -> list[Path]:
        return list(dict.fromkeys(p for p in (self.pids, self.memory) if p is not None))

    def enter(self) -> None:  # runs in the child before exec
        for path in self.folders:
            (path / "cgroup.procs").write_text(str(os.getpid()))

    def out_of_memory(self) -> bool:
        """Whether the OOM killer acted in this run's memory cgroup."""
        if self.memory is None:
            return False
        for name in ("memory.events", "memory.oom_control"):
            try:
                for line in (self.memory / name).read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and int(value) > 0:
                        return True
            except (OSError, ValueError):
                continue
        try:  # v1 kernels without an oom_kill count: the limit was hit and the run did not end cleanly
            return int((self.memory / "memory.failcnt").read_text()) > 0
        except (OSError, ValueError):
            return False

    def kill_all_and_remove(self) -> None:
        for path in self.folders:
            for _ in range(50):
                try:
                    pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
                except OSError:
                    break
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.02)
            try:
                path.rmdir()
            except OSError:
                pass


class Sandbox:
    """Runs a command on files copied into a private folder, isolated and bounded.

    ``argv[0] == "python"`` means this interpreter (so installed packages such as pytest are
    importable, read-only).
    """

    def __init__(self, limits: SandboxLimits | None = None, isolation: Isolation = "auto"):
        self.limits = limits or SandboxLimits()
        self.isolation = self._pick(isolation)

    @staticmethod
    def _pick(isolation: Isolation) -> str:
        if isolation != "auto":
            if isolation != "rlimits" and shutil.which("bwrap" if isolation == "bwrap" else "unshare") is None:
                raise RuntimeError(f"isolation {isolation!r} requested but its tool is not installed")
            return isolation
        if shutil.which("bwrap") and _bwrap_works():
            return "bwrap"
        if shutil.which("unshare") and _unshare_works():
            _warn_once("unshare", "bubblewrap (bwrap) is not available; model-written code runs with rlimits + "
                                  "`unshare` (no network, own pid namespace) but sees the host filesystem. "
                                  "Install the `bubblewrap` package for full isolation.")
            return "unshare"
        _warn_once("rlimits", "neither bubblewrap nor a usable `unshare` is available; model-written code runs "
                              "with rlimits ONLY (network and filesystem are NOT isolated). Install `bubblewrap`.")
        return "rlimits"

    def _command(self, argv: list[str], workdir: Path) -> list[str]:
        argv = [sys.executable if a == "python" else a for a in argv]
        if self.isolation == "bwrap":
            disk = str(self.limits.max_disk_mb * 1024 * 1024)
            cmd = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
                   "--proc", "/proc", "--dev", "/dev", "--size", disk, "--tmpfs", "/tmp"]
            for path in ("/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin"):
                if os.path.exists(path):
                    cmd += ["--ro-bind", path, path]
            for path in ("/etc/ld.so.cache", "/etc/localtime"):
                cmd += ["--ro-bind-try", path, path]
            for root in _interpreter_roots():
                cmd += ["--ro-bind", root, root]
            cmd += ["--ro-bind", str(workdir), "/input", "--size", disk, "--tmpfs", TASK_DIR,
                    "--remount-ro", "/", "--chdir", TASK_DIR,
                    "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", TASK_DIR,
                    "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--setenv", "PYTHONHASHSEED", "0", "--"]
            return cmd + ["/bin/sh", "-c", 'cp -R /input/. /task/ && exec "$@"', "sh", *argv]
        if self.isolation == "unshare":
            flags = ["--net", "--pid", "--fork", "--kill-child"]
            if os.geteuid() != 0:
                flags.insert(0, "--map-root-user")
            return ["unshare", *flags, "--", *argv]
        return argv

    def _child_setup(self, cgroup: _RunCgroups) -> None:
        lim = self.limits
        cgroup.enter()
        mb = 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (lim.memory_mb * mb, lim.memory_mb * mb))
        cpu = int(lim.timeout_s) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim.max_file_mb * mb, lim.max_file_mb * mb))
        resource.setrlimit(resource.RLIMIT_NOFILE, (lim.max_open_files, lim.max_open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if os.geteuid() != 0:  # root ignores RLIMIT_NPROC; the pids cgroup covers that case
            resource.setrlimit(resource.RLIMIT_NPROC, (lim.max_processes, lim.max_processes))

    def run(self, argv: list[str], files: dict[str, str | bytes]) -> SandboxResult:
        """Copy ``files`` in, run ``argv`` in the task folder; return its status and capped output."""
        with tempfile.TemporaryDirectory(prefix="characterlab-sbx-") as tmp:
            workdir = Path(tmp) / "task"
            workdir.mkdir()
            for name, content in files.items():
                target = (workdir / name).resolve()
                if workdir.resolve() not in target.parents:
                    raise ValueError(f"sandbox file {name!r} escapes the task folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content.encode() if isinstance(content, str) else content)
            os.chmod(workdir, 0o777)
            cgroup = _RunCgroups(self.limits.max_processes, self.limits.memory_mb, enabled=os.geteuid() == 0)
            if cgroup.memory is None:
                _warn_once("memory-cgroup", "no memory cgroup could be made (not root, or no memory controller): "
                                            f"each sandboxed process is capped at {self.limits.memory_mb} MB, but a "
                                            "run that starts several processes can use that much per process.")
            out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
            env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
            start = time.monotonic()
            timed_out = False
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                proc = subprocess.Popen(self._command(argv, workdir), cwd=workdir, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=err, env=env, start_new_session=True,
                                        preexec_fn=lambda: self._child_setup(cgroup))
                try:
                    proc.wait(timeout=self.limits.timeout_s)
                except subprocess.TimeoutExpired:
                    timed_out = True
                finally:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                    proc.wait()
                    oom = cgroup.out_of_memory()
                    cgroup.kill_all_and_remove()
            seconds = time.monotonic() - start
            stdout = _read_capped(out_path, self.limits.max_output_bytes)
            stderr = _read_capped(err_path, self.limits.max_output_bytes)
            code = proc.returncode
            status = "memory" if oom and not timed_out else _status(code, timed_out, stderr)
            return SandboxResult(status, None if timed_out else code, stdout, stderr, round(seconds, 3), self.isolation)


def _read_capped(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("\n[output truncated]" if len(data) > limit else "")


def _status(code: int | None, timed_out: bool, stderr: str) -> Status:
    if timed_out:
        return "timeout"
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return "memory"
    # A signalled child: negative from Popen, or 128 + signal when bwrap/unshare report it.
    sig = -code if code is not None and code < 0 else code - 128 if code is not None and code > 128 else None
    if sig == signal.SIGXCPU:
        return "timeout"
    if sig is not None and (code < 0 or sig in (signal.SIGKILL, signal.SIGSEGV, signal.SIGXFSZ, signal.SIGABRT)):
        return "killed"
    return "ok" if code == 0 else "error"


def _probe(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _bwrap_works() -> bool:
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--", "true"]
    return _probe(args)


def _unshare_works() -> bool:
    flags = ["--net", "--pid", "--fork"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    return _probe(["unshare", *flags, "--", "true"])
