import json
import socket
import sys
from pathlib import Path

import pytest

from mlops_lib.stack.procs import ManagedProcess, StackError, free_port, port_in_use, tail


def proc(tmp_path: Path, name: str = "svc") -> ManagedProcess:
    return ManagedProcess(name, tmp_path / "run", tmp_path / "logs")


def test_port_in_use_sees_a_listening_socket() -> None:
    port = free_port()
    assert not port_in_use("127.0.0.1", port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert port_in_use("127.0.0.1", port)


def test_start_writes_pid_file_and_stop_removes_it(tmp_path: Path) -> None:
    p = proc(tmp_path)
    pid = p.start([sys.executable, "-c", "import time; time.sleep(60)"], env={})
    assert p.read_pid() == pid
    assert json.loads(p.pid_file.read_text())["pid"] == pid
    assert p.stop(timeout=5) == "stopped"
    assert not p.pid_file.exists()
    assert not p.is_running()


def test_process_dying_at_start_reports_its_last_log_lines(tmp_path: Path) -> None:
    p = proc(tmp_path, "broken")
    p.start(
        [sys.executable, "-c", "print('config key foo is invalid'); raise SystemExit(3)"], env={}
    )
    with pytest.raises(StackError) as err:
        p.wait_healthy(lambda: False, timeout=20)
    assert "broken exited with code 3" in str(err.value)
    assert "config key foo is invalid" in str(err.value)


def test_unhealthy_process_times_out_with_log(tmp_path: Path) -> None:
    p = proc(tmp_path, "slow")
    p.start(
        [sys.executable, "-c", "print('warming up', flush=True); import time; time.sleep(30)"],
        env={},
    )
    with pytest.raises(StackError, match="slow was not healthy within 1s"):
        p.wait_healthy(lambda: False, timeout=1)
    p.stop(timeout=5)


def test_stale_pid_file_is_detected_and_removed(tmp_path: Path) -> None:
    p = proc(tmp_path)
    p.run_dir.mkdir(parents=True)
    p.pid_file.write_text(json.dumps({"pid": 999_999_99, "start_time": "0"}))
    assert p.has_stale_pid_file()
    assert p.stop() == "stale pid file removed"
    assert p.stop() == "not running"


def test_reused_pid_is_not_mistaken_for_ours(tmp_path: Path) -> None:
    import os

    p = proc(tmp_path)
    p.run_dir.mkdir(parents=True)
    # Our own pid, but with another start time: a different process.
    p.pid_file.write_text(json.dumps({"pid": os.getpid(), "start_time": "1"}))
    assert p.read_pid() is None


def test_tail_of_missing_file_is_empty(tmp_path: Path) -> None:
    assert tail(tmp_path / "nope.log") == ""


def test_stop_also_ends_children_that_left_the_process_group(tmp_path: Path) -> None:
    """Like BentoML's workers: a child in a session of its own must not outlive stop()."""
    import time

    import psutil

    child_pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
        " start_new_session=True)\n"
        f"open({str(child_pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(600)\n"
    )
    proc = ManagedProcess("tree", tmp_path / "run", tmp_path / "logs")
    proc.start([sys.executable, "-c", script], env={})
    deadline = time.monotonic() + 20
    while not child_pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(child_pid_file.read_text())
    assert psutil.pid_exists(child)
    assert proc.stop(timeout=5) == "stopped"
    time.sleep(0.5)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"


def test_a_file_lock_is_private_whatever_the_umask(tmp_path: Path) -> None:
    import os
    import stat

    from mlops_lib.stack.procs import file_lock

    old = os.umask(0o022)
    try:
        with file_lock(tmp_path / "keys.lock"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "keys.lock").stat().st_mode) == 0o600
