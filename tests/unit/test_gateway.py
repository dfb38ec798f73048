"""The serving gateway's route table and the nginx configuration rendered from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlops_lib.settings import load_settings
from mlops_lib.stack.gateway import (
    config_file,
    find_nginx,
    read_routes,
    render_config,
    write_config,
    write_route,
)


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


def _block(conf: str, opening: str) -> str:
    """The text of the block that opens with ``opening`` (up to its first closing brace)."""
    start = conf.index(opening)
    return conf[start : conf.index("}", start)]


def test_a_deployment_with_replicas_gets_a_server_each_balanced_by_least_connections(
    tmp_path: Path,
) -> None:
    settings = load_settings(stack_dir=tmp_path)
    write_route(tmp_path, "churn", {"port": 4001, "ports": [4001, 4002, 4003], "deployment": 3})
    conf = render_config(read_routes(tmp_path), settings)
    upstream = _block(conf, "upstream mlops_churn")
    servers = re.findall(r"server 127\.0\.0\.1:(\d+) (.*);", upstream)
    assert servers == [(str(p), "max_fails=1 fail_timeout=5s") for p in (4001, 4002, 4003)]
    # The balancing method comes before keepalive (nginx requires it).
    assert upstream.index("least_conn;") < upstream.index("server ") < upstream.index("keepalive")
    # A request whose replica broke goes to another, even a POST already sent.
    location = _block(conf, "location /churn/")
    assert "proxy_next_upstream error timeout non_idempotent;" in location
    assert "(ports 4001, 4002, 4003) is unavailable" in _block(conf, "location @unavailable_churn")


def test_a_deployment_with_one_replica_is_never_marked_down_nor_has_a_post_resent(
    tmp_path: Path,
) -> None:
    settings = load_settings(stack_dir=tmp_path)
    write_route(tmp_path, "churn", {"port": 4001, "ports": [4001], "deployment": 3})
    conf = render_config(read_routes(tmp_path), settings)
    upstream = _block(conf, "upstream mlops_churn")
    assert re.findall(r"server .*;", upstream) == ["server 127.0.0.1:4001 max_fails=0;"]
    assert "least_conn" not in upstream
    assert "non_idempotent" not in conf  # the http block's default holds: no POST sent twice
    assert "proxy_next_upstream error timeout;" in conf


def test_a_route_from_before_replicas_renders_from_its_one_port(tmp_path: Path) -> None:
    settings = load_settings(stack_dir=tmp_path)
    write_route(tmp_path, "churn", {"port": 4001, "deployment": 3})  # no "ports"
    conf = render_config(read_routes(tmp_path), settings)
    upstream = _block(conf, "upstream mlops_churn")
    assert re.findall(r"server .*;", upstream) == ["server 127.0.0.1:4001 max_fails=0;"]
    assert "(port 4001) is unavailable" in _block(conf, "location @unavailable_churn")


@pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed")
def test_nginx_accepts_the_configuration_of_single_and_replicated_deployments(
    tmp_path: Path,
) -> None:
    settings = load_settings(stack_dir=tmp_path)
    write_route(tmp_path, "churn", {"port": 4001, "ports": [4001, 4002], "deployment": 3})
    write_route(tmp_path, "fraud", {"port": 4003, "ports": [4003], "deployment": 4})
    write_route(tmp_path, "legacy", {"port": 4004, "deployment": 1})
    assert sorted(write_config(settings)) == ["churn", "fraud", "legacy"]  # `nginx -t` passed
    assert "least_conn;" in config_file(settings).read_text()


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
