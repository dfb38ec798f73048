"""A deployment's replicas: their process names, their rows in `stack status`, a switch that
stops every replica of the old deployment, and `restore` bringing back the replicas that are
gone. The lineage store is real (SQLite in a temporary folder) and so are the processes
(`sleep`, standing in for the Bento); no Bento is served and no gateway runs (a route is
written, nginx has nothing to reload)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_lib.lineage import DeploymentRow, lineage_store
from mlops_lib.serving import deploy
from mlops_lib.settings import Settings, load_settings
from mlops_lib.stack.gateway import read_routes, write_route

pytestmark = pytest.mark.usefixtures("isolated_environment")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(stack_dir=tmp_path / "stack", lineage_db_url=f"sqlite:///{tmp_path}/l.db")


@pytest.fixture
def running(settings: Settings) -> Iterator[Any]:
    """Starts a stand-in process for replicas of a deployment; stops whatever is left."""
    started = []

    def run(dep: DeploymentRow, *replicas: int) -> None:
        for replica in replicas:
            proc = deploy.process(settings, dep, replica)
            proc.start(["sleep", "120"], env={})
            started.append(proc)

    yield run
    for proc in started:
        proc.stop(timeout=5)


def _deployment(settings: Settings, ports: list[int] | None, **values: Any) -> DeploymentRow:
    port = ports[0] if ports else 4000
    return lineage_store(settings).record_deployment(
        project="churn",
        bento_tag="mlops-churn:a",
        model_version=3,
        port=port,
        ports=ports,
        url=f"http://127.0.0.1:{port}",
        runtime="onnx",
        **values,
    )


def test_replica_zero_keeps_the_deployments_process_name_and_the_others_are_numbered(
    settings: Settings,
) -> None:
    dep = _deployment(settings, [4001, 4002, 4003])
    names = [proc.name for proc in deploy.replicas(settings, dep)]
    base = f"deployment-churn-{dep['id']}"
    assert names == [base, f"{base}-r1", f"{base}-r2"]
    assert deploy.process(settings, dep).log_file.name == f"{base}.log"
    assert deploy.process(settings, dep, 2).pid_file.name == f"{base}-r2.pid"
    # A row from before replicas (no ports recorded) is one process on its one port.
    old = _deployment(settings, None)
    assert [p.name for p in deploy.replicas(settings, old)] == [f"deployment-churn-{old['id']}"]
    assert deploy.replica_ports(old) == [4000]


def test_status_has_a_row_per_replica_with_its_own_pid_address_and_health(
    settings: Settings, running: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dep = _deployment(settings, [4001, 4002, 4003, 4004], state=deploy.ACTIVE)
    route = {"port": 4001, "ports": [4001, 4002, 4003], "deployment": dep["id"]}
    write_route(settings.stack_dir, "churn", route)
    running(dep, 0, 1, 3)  # replica 2 is gone
    ready = {"http://127.0.0.1:4001/readyz", "http://127.0.0.1:4003/readyz"}
    ready.add("http://127.0.0.1:4004/readyz")  # answers, but the gateway does not route to it
    monkeypatch.setattr(deploy, "http_ok", lambda url: url in ready)

    rows = deploy.status(settings)

    assert [r["service"] for r in rows] == [
        "serving/churn",
        "serving/churn#1",
        "serving/churn#2",
        "serving/churn#3",
    ]
    assert [r["state"] for r in rows] == ["healthy", "unhealthy", "stopped", "unhealthy"]
    assert [r["replica"] for r in rows] == [0, 1, 2, 3]
    assert [r["replica_url"] for r in rows] == [f"http://127.0.0.1:{p}" for p in range(4001, 4005)]
    assert {r["url"] for r in rows} == {f"{settings.serving_base_url}/churn"}
    pids = [r["pid"] for r in rows]
    assert pids[2] is None and len({pids[0], pids[1], pids[3]}) == 3
    assert rows[1]["log"].endswith(f"deployment-churn-{dep['id']}-r1.log")
    assert {r["deployment"] for r in rows} == {dep["id"]} and rows[3]["runtime"] == "onnx"


def test_status_of_a_deployment_and_route_from_before_replicas_is_one_row(
    settings: Settings, running: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dep = _deployment(settings, None, state=deploy.ACTIVE)
    write_route(settings.stack_dir, "churn", {"port": 4000, "deployment": dep["id"]})
    running(dep, 0)
    monkeypatch.setattr(deploy, "http_ok", lambda url: url == "http://127.0.0.1:4000/readyz")

    (row,) = deploy.status(settings)

    assert (row["service"], row["state"], row["replica"]) == ("serving/churn", "healthy", 0)


def test_a_switch_routes_every_replica_and_stops_every_replica_of_the_old_deployment(
    settings: Settings, running: Any
) -> None:
    old = _deployment(settings, [4001, 4002], state=deploy.ACTIVE)
    new = _deployment(settings, [4011, 4012, 4013], state=deploy.STARTING)
    running(old, 0, 1)
    running(new, 0, 1, 2)

    out = deploy.switch(new["id"], settings)

    assert out["previous"] == [old["id"]] and out["ports"] == [4011, 4012, 4013]
    assert not any(proc.is_running() for proc in deploy.replicas(settings, old))
    assert all(proc.is_running() for proc in deploy.replicas(settings, new))
    route = read_routes(settings.stack_dir)["churn"]
    assert (route["port"], route["ports"], route["deployment"]) == (
        4011,
        [4011, 4012, 4013],
        new["id"],
    )


def test_a_candidate_with_a_replica_gone_is_not_switched_to(
    settings: Settings, running: Any
) -> None:
    new = _deployment(settings, [4011, 4012], state=deploy.STARTING)
    running(new, 0)

    with pytest.raises(deploy.DeploymentError, match="not a running candidate"):
        deploy.switch(new["id"], settings)


def test_restore_starts_only_the_replicas_that_are_gone_and_routes_to_those_that_serve(
    settings: Settings, running: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dep = _deployment(settings, [4001, 4002, 4003, 4004], state=deploy.ACTIVE)
    running(dep, 0)  # replicas 1, 2 and 3 are gone
    served: list[tuple[int, int]] = []

    def serve(dep: DeploymentRow, port: int, settings: Settings, replica: int = 0) -> None:
        served.append((replica, port))
        if replica == 3:
            raise deploy.StackError("deployment-churn-r3 was not healthy within 60s")

    monkeypatch.setattr(deploy, "_serve", serve)
    monkeypatch.setattr(deploy, "port_in_use", lambda host, port: port == 4002)  # taken
    fresh = iter([4001, 4003, 4100])  # the first two belong to replicas: not handed out
    monkeypatch.setattr(deploy, "free_port", lambda host: next(fresh))
    lines: list[str] = []

    (back,) = deploy.restore(settings, log_line=lines.append)

    assert sorted(served) == [(1, 4100), (2, 4003), (3, 4004)]
    assert back["ports"] == [4001, 4100, 4003, 4004]
    assert lineage_store(settings).deployment(dep["id"])["ports"] == [4001, 4100, 4003, 4004]
    route = read_routes(settings.stack_dir)["churn"]
    assert (route["port"], route["ports"]) == (4001, [4001, 4100, 4003])  # not replica 3
    assert any("could not restore replica 3" in line for line in lines), lines


def test_restore_leaves_a_deployment_whose_replicas_all_run_alone(
    settings: Settings, running: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dep = _deployment(settings, [4001, 4002], state=deploy.ACTIVE)
    running(dep, 0, 1)
    monkeypatch.setattr(deploy, "_serve", lambda *args, **kwargs: pytest.fail("started again"))

    assert deploy.restore(settings, log_line=lambda line: None) == []
    assert read_routes(settings.stack_dir) == {}
