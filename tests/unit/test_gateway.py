"""The serving gateway's route table and the nginx configuration rendered from it."""

from __future__ import annotations

from pathlib import Path

from mlops_lib.settings import load_settings
from mlops_lib.stack.gateway import read_routes, render_config, write_route


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


def test_config_routes_each_project_with_its_limits(tmp_path: Path) -> None:
    settings = load_settings(stack_dir=tmp_path, gateway_max_in_flight=7, gateway_max_body_mb=2)
    write_route(tmp_path, "churn", {"port": 4001, "deployment": 3})
    conf = render_config(read_routes(tmp_path), settings)
    assert "server 127.0.0.1:4001" in conf and "location /churn/" in conf
    assert "limit_conn inflight 7;" in conf and "client_max_body_size 2m;" in conf
    assert "listen 127.0.0.1:" in conf
    # Error pages hold in the project's location too (a location's error_page replaces
    # the server's).
    churn = conf[conf.index("location /churn/") :]
    assert "error_page 413 = @too_large;" in churn[: churn.index("}")]
    assert "error_page 503 = @full;" in churn[: churn.index("}")]


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
