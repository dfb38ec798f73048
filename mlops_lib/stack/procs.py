"""Local processes of the stack: pid files, start, health wait, stop."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx


class StackError(RuntimeError):
    """A stack operation failed; the message names the service and the cause."""


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (and threads), held while the block runs (the
    lock file is private, as every file of the stack)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_atomically(path: Path, text: str) -> None:
    """Replace a small state file at once: a reader sees the old text or the new, never a
    part (the temporary name is unique per process and thread)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def port_in_use(host: str, port: int) -> bool:
    """True when something accepts connections (or holds the bind) on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        if sock.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers bind with SO_REUSEADDR; do the same so TIME_WAIT leftovers don't count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port_run(n: int, host: str = "127.0.0.1") -> int:
    """First of ``n`` consecutive free ports (Airflow's API port and its two log servers)."""
    for _ in range(50):
        start = free_port(host)
        if all(not port_in_use(host, start + i) for i in range(n)):
            return start
    raise StackError(f"no run of {n} free ports found")


def _proc_start_time(pid: int) -> str | None:
    """Kernel start time of a process (guards against pid reuse), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) after the parenthesised command name.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :].split()[0] == "Z"


def tail(path: Path, lines: int = 25) -> str:
    """Last lines of a log file ('' when it does not exist)."""
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(content[-lines:])


@dataclass
class ManagedProcess:
    """One long-running process owned by the stack, tracked by a pid file."""

    name: str
    run_dir: Path
    log_dir: Path
    # What asks the process to stop (PostgreSQL takes SIGINT: its fast shutdown, which does
    # not wait for clients to disconnect as SIGTERM's smart shutdown does).
    stop_signal: int = signal.SIGTERM

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def read_pid(self) -> int | None:
        """Pid from the pid file when that process is still the one we started."""
        try:
            data = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        pid = int(data.get("pid", 0))
        if pid <= 0 or _is_zombie(pid):
            return None
        if _proc_start_time(pid) != data.get("start_time"):
            return None
        return pid

    def has_stale_pid_file(self) -> bool:
        """A pid file exists but its process is gone (or is another process)."""
        return self.pid_file.exists() and self.read_pid() is None

    def is_running(self) -> bool:
        return self.read_pid() is not None

    def start(
        self,
        cmd: Sequence[str],
        *,
        env: dict[str, str],
        cwd: Path | None = None,
        user: str | None = None,
    ) -> int:
        """Start the process in its own session, logging to its log file."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            log.write(f"\n--- starting {self.name}: {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                list(cmd),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=str(cwd) if cwd else None,
                start_new_session=True,
                # What services write (data, logs, databases) is readable by the owner only.
                umask=0o077,
                user=user,
                group=user,
            )
        self._proc = proc
        self.pid_file.write_text(
            json.dumps({"pid": proc.pid, "start_time": _proc_start_time(proc.pid), "cmd": cmd})
        )
        return proc.pid

    def wait_healthy(self, check: Callable[[], bool], timeout: float) -> None:
        """Wait until ``check()`` is true; raise with the log tail when the process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = getattr(self, "_proc", None)
            if proc is not None and proc.poll() is not None:
                raise StackError(
                    f"{self.name} exited with code {proc.returncode} during start-up; "
                    f"last lines of {self.log_file}:\n{tail(self.log_file)}"
                )
            if proc is None and not self.is_running():
                raise StackError(
                    f"{self.name} is not running; last lines of {self.log_file}:\n"
                    f"{tail(self.log_file)}"
                )
            if check():
                return
            time.sleep(0.5)
        raise StackError(
            f"{self.name} was not healthy within {timeout:.0f}s; last lines of "
            f"{self.log_file}:\n{tail(self.log_file)}"
        )

    def stop(self, timeout: float = 30.0) -> str:
        """Stop the process group; returns what happened ('stopped', 'stale', 'not running')."""
        pid = self.read_pid()
        if pid is None:
            stale = self.pid_file.exists()
            self.pid_file.unlink(missing_ok=True)
            return "stale pid file removed" if stale else "not running"
        # Some servers (BentoML's workers) start children in sessions of their own: remember
        # the whole tree, so none of it outlives the stop.
        descendants = _descendants(pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, self.stop_signal)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.read_pid() is not None:
            proc = getattr(self, "_proc", None)
            if proc is not None:
                proc.poll()
            time.sleep(0.2)
        if self.read_pid() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            time.sleep(0.5)
        _kill_survivors(descendants, max(0.0, deadline - time.monotonic()))
        # Reap our own child when we started it in this process.
        proc = getattr(self, "_proc", None)
        if proc is not None:
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        self.pid_file.unlink(missing_ok=True)
        return "stopped"


def _descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _kill_survivors(procs: list, grace: float) -> None:
    """Wait up to ``grace`` seconds for processes to end, then SIGKILL what is left."""
    import psutil

    _, alive = psutil.wait_procs(procs, timeout=min(grace, 10.0))
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when GET url answers 2xx."""
    try:
        return httpx.get(url, timeout=timeout).is_success
    except httpx.HTTPError:
        return False
