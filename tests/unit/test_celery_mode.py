"""The stack's Celery mode without starting anything: the executor check, the services it
adds (Redis first, the workers last), Airflow's Celery configuration, Redis's private
configuration and its ping (against a fake RESP server), the choices recorded by `up`, and
the queues of the DAGs' tasks."""

from __future__ import annotations

import importlib
import importlib.util
import json
import socket
import socketserver
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote, urlsplit

import pytest
from click.testing import CliRunner

from mlops_lib.cli import main
from mlops_lib.settings import (
    DEFAULT_QUEUE,
    TRAINING_QUEUE,
    Settings,
    load_settings,
    secret_names,
)
from mlops_lib.stack import gateway, manager, redis
from mlops_lib.stack import postgres as pg
from mlops_lib.stack.procs import StackError

REPO = Path(__file__).resolve().parents[2]
REDIS_PASSWORD = "pw/with:odd@chars"
POSTGRES_HINT = "--backend postgres"


# No MLOPS_* variable nor .env file of the caller reaches the settings.
pytestmark = pytest.mark.usefixtures("isolated_environment")


def _secrets() -> dict[str, str]:
    """A distinct, recognisable value for every secret setting."""
    values = {name: f"secret-{name}-7f3a" for name in secret_names()}
    return values | {"redis_password": REDIS_PASSWORD}


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "stack_dir": tmp_path / "stack",
        "host": "127.0.0.1",
        "lakefs_access_key_id": "AKIAEXAMPLE",
        **_secrets(),
    }
    return load_settings(**(values | overrides))


def _celery(tmp_path: Path, **overrides: object) -> Settings:
    return _settings(tmp_path, backend="postgres", executor="celery", **overrides)


# 1. The executor check ------------------------------------------------------------------


def test_celery_on_the_sqlite_backend_is_refused_naming_the_postgres_backend(
    tmp_path: Path,
) -> None:
    with pytest.raises(StackError, match=POSTGRES_HINT):
        manager.check_executor(_settings(tmp_path, backend="sqlite", executor="celery"))


@pytest.mark.parametrize(
    ("backend", "executor"),
    [("postgres", "celery"), ("sqlite", "local"), ("postgres", "local")],
)
def test_celery_on_postgres_and_local_on_any_backend_are_accepted(
    tmp_path: Path, backend: str, executor: str
) -> None:
    manager.check_executor(_settings(tmp_path, backend=backend, executor=executor))


@pytest.fixture(scope="module")
def platform_stack() -> ModuleType:
    """What `mlops stack up` imports (deployments, lineage: seconds), imported once."""
    return importlib.import_module("mlops_lib.platform_stack")


def test_stack_up_with_celery_on_sqlite_exits_1_with_the_hint_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform_stack: ModuleType
) -> None:
    stack_dir = tmp_path / "stack"
    monkeypatch.setenv("MLOPS_STACK_DIR", str(stack_dir))
    # Should the check ever come too late, nothing gets generated nor started here.
    reached: list[str] = []

    def must_not_run(name: str):
        def run(*args: object, **kwargs: object) -> None:
            reached.append(name)
            raise RuntimeError(f"{name} reached")

        return run

    monkeypatch.setattr(manager, "ensure_credentials", must_not_run("ensure_credentials"))
    monkeypatch.setattr(manager.ManagedProcess, "start", must_not_run("start"))

    result = CliRunner().invoke(main, ["stack", "up", "--executor", "celery"])

    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert POSTGRES_HINT in " ".join(result.output.split())
    assert reached == []
    assert not stack_dir.exists()


# 2. The services of each mode -----------------------------------------------------------


@pytest.fixture
def no_installs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service commands' binaries, without looking them up or installing them."""
    monkeypatch.setattr(redis, "server_binary", lambda **kw: "/usr/bin/redis-server")
    monkeypatch.setattr(pg, "install_postgres", lambda settings, **kw: Path("/pg/bin"))
    monkeypatch.setattr(pg, "server_user", lambda: None)
    monkeypatch.setattr(manager, "ensure_lakefs_binary", lambda settings, *a, **kw: Path("/lf"))
    monkeypatch.setattr(gateway, "install_nginx", lambda **kw: "/usr/sbin/nginx")


def _workers(services: list[manager.Service]) -> list[manager.Service]:
    return [s for s in services if s.name.startswith(manager.WORKER_PREFIX)]


def test_celery_mode_starts_postgres_and_redis_first_and_its_workers_last(
    tmp_path: Path, no_installs: None
) -> None:
    settings = _celery(tmp_path, celery_workers=3)
    names = [s.name for s in manager.services(settings)]
    assert names[:2] == ["postgres", "redis"]
    assert names[-3:] == manager.worker_names(settings)
    assert len(_workers(manager.services(settings))) == 3


def test_each_worker_has_its_own_name_and_folder_and_serves_no_logs(
    tmp_path: Path, no_installs: None
) -> None:
    settings = _celery(tmp_path, celery_workers=3)
    workers = _workers(manager.services(settings))
    names = [w.name for w in workers]
    folders = [w.workdir for w in workers]
    assert len(set(names)) == len(set(folders)) == 3
    assert all(f is not None and f.is_relative_to(settings.stack_dir) for f in folders)
    # The API server reads task logs from the shared folder: no worker opens a listener.
    assert all("--skip-serve-logs" in w.command() for w in workers)
    assert all(w.port is None for w in workers)


def test_workers_take_the_configured_queues_under_their_own_celery_hostname(
    tmp_path: Path, no_installs: None
) -> None:
    settings = _celery(tmp_path, celery_workers=2, celery_queues=TRAINING_QUEUE)
    for worker in _workers(manager.services(settings)):
        command = worker.command()
        line = " ".join(command)
        assert "celery worker" in line
        assert command[command.index("--queues") + 1] == TRAINING_QUEUE
        hostname = command[command.index("--celery-hostname") + 1]
        assert hostname.split("@")[0] == worker.name


def test_no_service_command_line_carries_a_secret(tmp_path: Path, no_installs: None) -> None:
    settings = _celery(tmp_path, celery_workers=2)
    services = manager.services(settings)
    assert "redis" in [s.name for s in services]
    for service in services:
        line = " ".join(service.command())
        for name, value in _secrets().items():
            assert value not in line, f"{name} on the command line of {service.name}"
        assert REDIS_PASSWORD not in line and "pw%2Fwith" not in line


def test_local_mode_runs_neither_redis_nor_workers(tmp_path: Path, no_installs: None) -> None:
    for backend in ("sqlite", "postgres"):
        settings = _settings(tmp_path, backend=backend, executor="local", celery_workers=3)
        names = [s.name for s in manager.services(settings)]
        assert "redis" not in names
        assert not [n for n in names if n.startswith(manager.WORKER_PREFIX)]


# 3. Airflow's configuration -------------------------------------------------------------


def test_celery_mode_puts_airflow_on_the_celery_executor_with_a_quoted_broker_password(
    tmp_path: Path,
) -> None:
    env = manager.airflow_env(_celery(tmp_path, redis_port=6390))
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    url = env["AIRFLOW__CELERY__BROKER_URL"]
    assert REDIS_PASSWORD not in url  # quoted: '/', ':' and '@' would break the URL
    parts = urlsplit(url)
    assert parts.scheme == "redis"
    assert (parts.hostname, parts.port) == ("127.0.0.1", 6390)
    assert parts.password is not None and unquote(parts.password) == REDIS_PASSWORD
    # ...and as Celery's transport reads it.
    from kombu.utils.url import url_to_parts

    assert url_to_parts(url).password == REDIS_PASSWORD


def test_local_mode_keeps_the_local_executor_and_has_no_broker(tmp_path: Path) -> None:
    env = manager.airflow_env(_settings(tmp_path, executor="local", redis_password=None))
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert "AIRFLOW__CELERY__BROKER_URL" not in env
    assert not [value for value in env.values() if value.startswith("redis://")]


# 4. Redis: its configuration and its ping -----------------------------------------------


def test_redis_config_is_private_and_binds_the_stack_host_with_a_password_and_a_journal(
    tmp_path: Path,
) -> None:
    settings = _celery(tmp_path, host="127.0.0.5", redis_port=6390)
    path = redis.write_config(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert "bind 127.0.0.5" in lines
    assert "port 6390" in lines
    assert f'requirepass "{REDIS_PASSWORD}"' in lines  # quoted: one argument to Redis
    assert "appendonly yes" in lines


def test_redis_config_quotes_a_password_and_a_folder_with_spaces_and_quotes(
    tmp_path: Path,
) -> None:
    settings = _celery(tmp_path / "My Projects", redis_password='a b"c')
    lines = redis.write_config(settings).read_text().splitlines()
    assert 'requirepass "a b\\"c"' in lines
    assert f'dir "{tmp_path / "My Projects"}' in "\n".join(lines)


def test_queue_names_lose_stray_spaces_and_an_empty_list_is_refused(tmp_path: Path) -> None:
    from pydantic import ValidationError

    assert _celery(tmp_path, celery_queues=" default , training,").celery_queues == (
        "default,training"
    )
    with pytest.raises(ValidationError, match="name at least one queue"):
        _celery(tmp_path, celery_queues=" , ")


def test_a_queue_no_worker_takes_is_named_at_up(tmp_path: Path) -> None:
    said: list[str] = []
    manager.check_executor(_celery(tmp_path, celery_queues="training"), log=said.append)
    assert len(said) == 1 and "'default' queue" in said[0]


class _FakeRedis(socketserver.StreamRequestHandler):
    """Answers AUTH and PING in RESP, as Redis does with ``requirepass``."""

    server: _FakeRedisServer

    def handle(self) -> None:
        authenticated = False
        while (parts := self._command()) is not None:
            self.server.received.append(parts)
            if parts[0].upper() == "AUTH":
                authenticated = parts[-1] == self.server.password
                reply = (
                    "+OK"
                    if authenticated
                    else "-WRONGPASS invalid username-password pair or user is disabled."
                )
            elif parts[0].upper() == "PING":
                reply = "+PONG" if authenticated else "-NOAUTH Authentication required."
            else:
                reply = f"-ERR unknown command '{parts[0]}'"
            self.wfile.write(reply.encode() + b"\r\n")

    def _command(self) -> list[str] | None:
        header = self.rfile.readline()
        if not header.startswith(b"*"):
            return None
        parts = []
        for _ in range(int(header[1:])):
            size = int(self.rfile.readline()[1:])
            parts.append(self.rfile.read(size + 2)[:-2].decode())
        return parts


class _FakeRedisServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, password: str) -> None:
        super().__init__(("127.0.0.1", 0), _FakeRedis)
        self.password = password
        self.received: list[list[str]] = []


@pytest.fixture
def fake_redis() -> Iterator[_FakeRedisServer]:
    server = _FakeRedisServer(REDIS_PASSWORD)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)


def test_redis_ping_with_the_right_password_is_answered_pong(
    tmp_path: Path, fake_redis: _FakeRedisServer
) -> None:
    settings = _celery(tmp_path, redis_port=fake_redis.server_address[1])
    assert redis.ping(settings, timeout=1.0) == "+PONG"
    # The password goes as a RESP bulk string, whatever its characters.
    assert fake_redis.received == [["AUTH", REDIS_PASSWORD], ["PING"]]
    assert redis.healthy(settings)


def test_redis_ping_with_a_wrong_password_returns_the_servers_refusal(
    tmp_path: Path, fake_redis: _FakeRedisServer
) -> None:
    settings = _celery(tmp_path, redis_port=fake_redis.server_address[1])
    assert redis.ping(settings, password="not-it", timeout=1.0).startswith("-WRONGPASS")
    assert fake_redis.received == [["AUTH", "not-it"]]  # no PING after a refused AUTH
    wrong = _celery(tmp_path, redis_port=fake_redis.server_address[1], redis_password="x")
    assert not redis.healthy(wrong)


def test_redis_ping_returns_nothing_when_nothing_listens(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = _celery(tmp_path, redis_port=port)
    assert redis.ping(settings, timeout=0.5) == ""
    assert not redis.healthy(settings)


# 5. The choices recorded by `up` --------------------------------------------------------


RECORDED = {
    "backend": "postgres",
    "executor": "celery",
    "celery_workers": 3,
    "celery_queues": TRAINING_QUEUE,
}


def _record(stack_dir: Path, **choices: object) -> None:
    stack_dir.mkdir(parents=True, exist_ok=True)
    (stack_dir / manager.STATE_FILE).write_text(json.dumps(choices))


@pytest.fixture
def running(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stack whose services run (their pid files are alive)."""
    monkeypatch.setattr(manager, "_anything_running", lambda _settings: True)


def test_a_stopped_stack_starts_afresh_whatever_was_recorded(tmp_path: Path) -> None:
    stack_dir = tmp_path / "stack"
    _record(stack_dir, **RECORDED)
    settings = manager.current_settings(stack_dir=stack_dir)
    assert (settings.backend, settings.executor) == ("sqlite", "local")


def test_current_settings_takes_the_choices_recorded_by_up(tmp_path: Path, running: None) -> None:
    stack_dir = tmp_path / "stack"
    _record(stack_dir, **RECORDED, lakefs_auth="acl")
    settings = manager.current_settings(stack_dir=stack_dir)
    assert {k: getattr(settings, k) for k in RECORDED} == RECORDED


def test_current_settings_without_a_record_keeps_the_defaults(tmp_path: Path) -> None:
    settings = manager.current_settings(stack_dir=tmp_path / "stack")
    assert (settings.backend, settings.executor) == ("sqlite", "local")
    assert settings.celery_workers == 2
    assert settings.celery_queues == f"{DEFAULT_QUEUE},{TRAINING_QUEUE}"


def test_choices_given_as_arguments_win_over_the_recorded_ones(
    tmp_path: Path, running: None
) -> None:
    stack_dir = tmp_path / "stack"
    _record(stack_dir, **RECORDED)
    settings = manager.current_settings(
        "sqlite", stack_dir=stack_dir, executor="local", celery_workers=1
    )
    assert (settings.backend, settings.executor, settings.celery_workers) == ("sqlite", "local", 1)
    assert settings.celery_queues == TRAINING_QUEUE  # not given: still the recorded one


def test_choices_given_in_the_environment_win_over_the_recorded_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, running: None
) -> None:
    stack_dir = tmp_path / "stack"
    _record(stack_dir, **RECORDED)
    monkeypatch.setenv("MLOPS_CELERY_WORKERS", "5")
    settings = manager.current_settings(stack_dir=stack_dir)
    assert settings.celery_workers == 5
    assert settings.executor == "celery"


# 6. The queues of the DAGs' tasks -------------------------------------------------------


@pytest.fixture(scope="module")
def dags() -> dict:
    """Every DAG the factory builds for the repository's projects."""
    found = importlib.util.spec_from_file_location(
        "mlops_projects_queues_under_test", REPO / "dags" / "mlops_projects.py"
    )
    assert found is not None and found.loader is not None
    factory = importlib.util.module_from_spec(found)
    found.loader.exec_module(factory)
    return factory.generate(REPO / "projects")


def test_trials_refit_and_package_go_to_the_training_queue_and_other_tasks_to_the_default_one(
    dags: dict,
) -> None:
    queues = {(dag_id, t.task_id): t.queue for dag_id, dag in dags.items() for t in dag.tasks}
    heavy = {key for key in queues if key[1] in ("search", "train", "package")}
    assert ("churn__train", "search") in heavy and ("churn__train", "train") in heavy
    assert ("churn__continuous_training", "train") in heavy
    assert ("churn__deploy", "package") in heavy
    assert {queues[key] for key in heavy} == {TRAINING_QUEUE}
    others = {key: queue for key, queue in queues.items() if key not in heavy}
    assert others and set(others.values()) == {DEFAULT_QUEUE}, others
