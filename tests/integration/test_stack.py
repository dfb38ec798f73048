"""The real local stack: health, idempotent start, recovery with data intact, faults."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlops_lib import platform_stack
from mlops_lib.airflow_api import AirflowClient
from mlops_lib.settings import Settings
from mlops_lib.stack import manager
from mlops_lib.stack.procs import StackError, port_in_use
from mlops_lib.versioning import client as lakefs_client

from .conftest import mlops_cli as cli
from .conftest import stack_settings

pytestmark = pytest.mark.integration

SERVICES = {
    "lakefs-acl",
    "lakefs",
    "mlflow",
    "serving-gateway",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}


def test_status_json_lists_every_service_healthy(stack: Settings) -> None:
    proc = cli(stack, "stack", "status", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["backend"] == "sqlite"
    rows = {r["service"]: r for r in report["services"]}
    # Projects deployed by earlier tests are listed as serving/<project>.
    deployed = {name for name in rows if name.startswith(("serving/", "features/"))}
    assert set(rows) - deployed == SERVICES
    for name, row in rows.items():
        assert row["state"] == "healthy", (name, row, manager.last_log_lines(stack, name))
        assert isinstance(row["pid"], int)
        assert Path(row["log"]).is_file()
    assert rows["lakefs"]["url"] == f"http://127.0.0.1:{stack.lakefs_port}"
    assert rows["mlflow"]["url"] == f"http://127.0.0.1:{stack.mlflow_port}"
    assert rows["airflow-api-server"]["url"] == f"http://127.0.0.1:{stack.airflow_port}"
    assert rows["serving-gateway"]["url"] == f"http://127.0.0.1:{stack.serving_port}"


def test_up_twice_starts_nothing_twice(stack: Settings) -> None:
    before = {r["service"]: r["pid"] for r in platform_stack.status(stack)}
    proc = cli(stack, "stack", "up")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("already running") == len(SERVICES)
    after = {r["service"]: r["pid"] for r in platform_stack.status(stack)}
    assert after == before


def test_platform_check_dag_runs_on_the_scheduler(stack: Settings) -> None:
    client = AirflowClient.from_settings(stack)
    client.prepare("platform_check")
    run_id, state = client.run("platform_check", timeout=300)
    assert state == "success"
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances("platform_check", run_id)}
    assert states == {"check_lakefs": "success", "check_mlflow": "success"}


def test_killed_lakefs_and_mlflow_come_back_with_their_data(stack: Settings) -> None:
    import lakefs
    from mlflow.tracking import MlflowClient

    repo = lakefs.Repository("persist-check", client=lakefs_client(stack)).create(
        storage_namespace="local://persist-check", exist_ok=True
    )
    branch = repo.branch("main")
    branch.object("hello.txt").upload(data=b"kept across restarts")
    commit = branch.commit(message="persist check", metadata={"source": "test"}).get_commit().id
    mlflow_client = MlflowClient(tracking_uri=stack.mlflow_url)
    exp_id = mlflow_client.create_experiment(f"persist-check-{time.time_ns()}")

    pids = {r["service"]: r["pid"] for r in platform_stack.status(stack)}
    for name in ("lakefs", "mlflow"):
        os.killpg(pids[name], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = {r["service"]: r["state"] for r in platform_stack.status(stack)}
        if states["lakefs"] == "stale" and states["mlflow"] == "stale":
            break
        time.sleep(0.5)
    # The pid files are left behind by the killed processes: status calls them stale.
    assert states["lakefs"] == "stale", states
    assert states["mlflow"] == "stale", states

    proc = cli(stack, "stack", "up")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["service"]: r for r in platform_stack.status(stack)}
    assert all(r["state"] == "healthy" for r in rows.values()), rows
    assert rows["lakefs"]["pid"] != pids["lakefs"]
    assert rows["airflow-scheduler"]["pid"] == pids["airflow-scheduler"]

    repo = lakefs.Repository("persist-check", client=lakefs_client(stack))
    assert repo.branch("main").get_commit().id == commit
    assert repo.branch("main").object("hello.txt").reader().read() == b"kept across restarts"
    assert mlflow_client.get_experiment(exp_id).experiment_id == exp_id


def test_busy_port_fails_naming_service_and_port(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path / "busy")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", settings.mlflow_port))
        holder.listen()
        with pytest.raises(StackError) as err:
            platform_stack.up(settings, log=lambda _m: None)
    message = str(err.value)
    assert f"port {settings.mlflow_port} for mlflow is already in use" in message
    assert "MLOPS_MLFLOW_PORT" in message
    assert not list((tmp_path / "busy" / "run").glob("*.pid"))
    assert not port_in_use("127.0.0.1", settings.lakefs_port)


def test_service_dying_at_start_prints_its_log_and_stops_what_started(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path / "dies")
    db = tmp_path / "dies" / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a sqlite database" * 100)
    with pytest.raises(StackError) as err:
        platform_stack.up(settings, log=lambda _m: None)
    message = str(err.value)
    assert message.startswith("mlflow exited with code"), message
    assert "last lines of" in message and "mlflow.log" in message
    assert "not a database" in message
    # lakeFS had started before MLflow died: it is stopped again.
    assert not list((tmp_path / "dies" / "run").glob("*.pid"))
    assert not port_in_use("127.0.0.1", settings.lakefs_port)


def test_down_with_nothing_running_and_with_stale_pid_file(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path / "idle")
    proc = cli(settings, "stack", "down")
    assert proc.returncode == 0
    assert "nothing was running" in proc.stdout
    run = tmp_path / "idle" / "run"
    run.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / "mlflow.pid").write_text(json.dumps({"pid": dead.pid, "start_time": "1"}))
    proc = cli(settings, "stack", "down")
    assert proc.returncode == 0
    assert "removed stale pid files: mlflow" in proc.stdout
    assert not (run / "mlflow.pid").exists()
