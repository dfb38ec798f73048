"""The serving gateway: route file, unknown projects, unavailable deployments."""

from __future__ import annotations

from pathlib import Path

from starlette.testclient import TestClient

from mlops_lib.serving.gateway import RouteTable, create_app, read_routes, write_route
from mlops_lib.stack.procs import free_port


def test_routes_are_written_atomically_and_removed(tmp_path: Path) -> None:
    write_route(tmp_path, "churn", {"port": 1234, "deployment": 1})
    write_route(tmp_path, "fraud", {"port": 1235, "deployment": 2})
    write_route(tmp_path, "churn", {"port": 1236, "deployment": 3})
    assert read_routes(tmp_path) == {
        "churn": {"port": 1236, "deployment": 3},
        "fraud": {"port": 1235, "deployment": 2},
    }
    write_route(tmp_path, "fraud", None)
    assert list(read_routes(tmp_path)) == ["churn"]
    assert not list((tmp_path / "serving").glob("*.tmp"))


def test_route_table_sees_a_switch(tmp_path: Path) -> None:
    table = RouteTable(tmp_path, interval=0)
    assert table.get("churn") is None
    write_route(tmp_path, "churn", {"port": 1, "deployment": 1})
    assert table.get("churn")["deployment"] == 1
    write_route(tmp_path, "churn", {"port": 2, "deployment": 2})
    assert table.get("churn")["deployment"] == 2


def test_unknown_project_is_404_and_dead_deployment_is_503(tmp_path: Path) -> None:
    write_route(tmp_path, "churn", {"port": free_port(), "deployment": 7})
    with TestClient(create_app(tmp_path)) as client:
        assert client.get("/healthz").json() == {"status": "ok", "projects": ["churn"]}
        missing = client.post("/fraud/predict", json={})
        assert missing.status_code == 404 and "'fraud'" in missing.json()["detail"]
        dead = client.post("/churn/predict", json={})
        assert dead.status_code == 503 and "deployment 7" in dead.json()["detail"]


def _switch_many(args: tuple[str, str, int]) -> None:
    stack_dir, project, n = args
    for i in range(n):
        write_route(Path(stack_dir), project, {"port": 9000 + i, "deployment": i})


def test_projects_switching_at_once_all_keep_their_route(tmp_path: Path) -> None:
    from concurrent.futures import ProcessPoolExecutor

    projects = [f"p{i}" for i in range(6)]
    with ProcessPoolExecutor(max_workers=6) as pool:
        list(pool.map(_switch_many, [(str(tmp_path), p, 40) for p in projects]))
    routes = read_routes(tmp_path)
    assert sorted(routes) == projects
    assert all(r["deployment"] == 39 for r in routes.values())
