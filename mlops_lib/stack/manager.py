"""`mlops stack up|down|status`: the local stack as supervised processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NotRequired, TypedDict

import httpx

from mlops_lib.settings import (
    DEFAULT_QUEUE,
    TRAINING_QUEUE,
    Settings,
    load_settings,
    process_env,
    reload_settings,
    settings_env,
)
from mlops_lib.stack import gateway, redis
from mlops_lib.stack import postgres as pg
from mlops_lib.stack.credentials import ensure_credentials, write_private
from mlops_lib.stack.lakefs_build import ensure_lakefs_binary
from mlops_lib.stack.procs import (
    ManagedProcess,
    StackError,
    free_port,
    free_port_run,
    http_ok,
    port_in_use,
    tail,
)

AIRFLOW_COMPONENTS = ("scheduler", "dag-processor", "triggerer")
# Every service `up` may start, in start order (postgres only with that backend).
SERVICE_NAMES = (
    "postgres",
    "redis",
    "lakefs-acl",
    "lakefs",
    "mlflow",
    "serving-gateway",
    "airflow-api-server",
    *(f"airflow-{c}" for c in AIRFLOW_COMPONENTS),
)
STATE_FILE = "stack.json"
# Choices `up` records, so that later commands see the stack as it was started.
STACK_CHOICES = ("backend", "executor", "celery_workers", "celery_queues")
WORKER_PREFIX = "airflow-worker-"
Log = Callable[[str], None]


@dataclass
class Service:
    """One service of the local stack."""

    name: str
    port: int | None
    url: str | None
    command: Callable[[], list[str]]
    health: Callable[[], bool]
    env: Callable[[], dict[str, str]] = dict
    user: str | None = None
    health_url: str | None = None
    workdir: Path | None = None  # default: the stack folder


def _bin(name: str) -> str:
    """Executable installed next to the running interpreter (the project's venv)."""
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else name


def current_settings(backend: str | None = None, **overrides: object) -> Settings:
    """Settings of the stack as started: while it runs, the backend and executor choices
    recorded by `up` unless given (arguments or environment)."""
    if backend:
        overrides["backend"] = backend
    settings = load_settings(**overrides)
    if not _anything_running(settings):  # a stopped stack starts afresh from the settings
        return settings
    recorded = read_state(settings)
    taken = {
        k: recorded[k]
        for k in STACK_CHOICES
        if k in recorded and k not in settings.model_fields_set
    }
    return load_settings(**overrides, **taken) if taken else settings


def _anything_running(settings: Settings) -> bool:
    names = [*SERVICE_NAMES, *_started_workers(settings)]
    return any(_proc(settings, name).is_running() for name in names)


PORT_SETTINGS = (
    "lakefs_port",
    "lakefs_acl_port",
    "mlflow_port",
    "postgres_port",
    "serving_port",
    "redis_port",
)


def free_ports() -> dict[str, int]:
    """A distinct free port for each service of a throw-away stack, as settings (Airflow's
    API port is followed by two free ones, for its log servers)."""
    airflow = free_port_run(3)
    taken = {airflow, airflow + 1, airflow + 2}
    ports = {"airflow_port": airflow}
    for name in PORT_SETTINGS:
        port = free_port()
        while port in taken:  # the OS may hand out a port it just gave
            port = free_port()
        ports[name] = port
        taken.add(port)
    return ports


def read_state(settings: Settings) -> dict:
    try:
        return json.loads((settings.stack_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _write_state(settings: Settings, **values: object) -> None:
    state = read_state(settings) | values
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    (settings.stack_dir / STATE_FILE).write_text(json.dumps(state, indent=2))


def airflow_db_url(settings: Settings) -> str:
    if settings.backend == "postgres":
        return settings.postgres_url(settings.postgres_airflow_db)
    return f"sqlite:///{settings.stack_dir / 'airflow' / 'airflow.db'}"


def mlflow_backend_uri(settings: Settings) -> str:
    if settings.backend == "postgres":
        return settings.postgres_url(settings.postgres_mlflow_db)
    return f"sqlite:///{settings.stack_dir / 'mlflow' / 'mlflow.db'}"


# Secret settings the Airflow processes (and so the tasks) get; every other service gets
# only the secrets of its own configuration, as that service's own variables.
AIRFLOW_SECRETS = (
    "lakefs_secret_access_key",
    "mlflow_password",
    "postgres_password",
    "serving_probe_key",
)


def base_env(
    settings: Settings, secrets: tuple[str, ...] = (), *, airflow: bool = False
) -> dict[str, str]:
    """Environment of a child process: the caller's and the settings, without secrets
    except those named (and Airflow's variables only for Airflow)."""
    env = process_env(airflow=airflow)
    env.update(settings_env(settings, secrets))
    env["WHYLOGS_NO_ANALYTICS"] = "True"
    # Fail fast when MLflow is down: the Airflow task retry (with backoff) takes over.
    env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(settings.mlflow_http_retries)
    env["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    env["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "60"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def airflow_env(settings: Settings) -> dict[str, str]:
    """Airflow configuration of the local stack, as AIRFLOW__* variables."""
    home = settings.stack_dir / "airflow"
    base = settings.airflow_base_url
    env = base_env(settings, AIRFLOW_SECRETS, airflow=True)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(settings.repo_root / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.repo_root / "plugins"),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": str(settings.airflow_dags_paused),
            "AIRFLOW__CORE__PARALLELISM": str(settings.airflow_parallelism),
            "AIRFLOW__CORE__FERNET_KEY": settings.secret("airflow_fernet_key"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.airflow_user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db_url(settings),
            "AIRFLOW__API__HOST": settings.host,
            "AIRFLOW__API__PORT": str(settings.airflow_port),
            "AIRFLOW__API__BASE_URL": base,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": settings.secret("airflow_secret_key"),
            "AIRFLOW__API_AUTH__JWT_SECRET": settings.secret("airflow_jwt_secret"),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(settings.airflow_port + 1),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(settings.airflow_port + 2),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "15",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(
                settings.airflow_task_heartbeat_timeout
            ),
        }
    )
    if settings.executor == "celery":
        env.update(celery_env(settings))
    return env


def celery_env(settings: Settings) -> dict[str, str]:
    """CeleryExecutor on the stack's Redis; results in Airflow's own database (the
    provider's default, ``db+`` + its connection)."""
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": redis.broker_url(settings),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(settings.celery_worker_concurrency),
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": DEFAULT_QUEUE,
    }


_MONITOR_CACHE: dict[str, tuple[float, dict]] = {}


def _airflow_monitor(base_url: str, max_age: float = 1.0) -> dict:
    """Airflow's /monitor/health document, shared by the component checks of one poll."""
    now = time.monotonic()
    cached = _MONITOR_CACHE.get(base_url)
    if cached and now - cached[0] < max_age:
        return cached[1]
    try:
        resp = httpx.get(f"{base_url}/api/v2/monitor/health", timeout=3)
        doc = resp.json() if resp.is_success else {}
    except (httpx.HTTPError, ValueError):
        doc = {}
    _MONITOR_CACHE[base_url] = (now, doc)
    return doc


def _airflow_component_health(settings: Settings, key: str) -> Callable[[], bool]:
    def check() -> bool:
        component = _airflow_monitor(settings.airflow_base_url).get(key, {})
        return component.get("status") == "healthy"

    return check


def services(settings: Settings) -> list[Service]:
    """The services of the stack for the configured backend and executor, in start order."""
    first = [_postgres_service(settings)] if settings.backend == "postgres" else []
    acl = [_lakefs_acl_service(settings)] if lakefs_auth(settings) == ACL else []
    celery = settings.executor == "celery"
    return [
        *first,
        *([_redis_service(settings)] if celery else []),
        *acl,
        _lakefs_service(settings),
        _mlflow_service(settings),
        _gateway_service(settings),
        *_airflow_services(settings),
        *(_worker_services(settings) if celery else []),
    ]


def check_executor(settings: Settings, log: Log = print) -> None:
    """CeleryExecutor needs a database other than SQLite: say so before anything starts.
    Queues no worker here takes are named (their tasks wait for a worker elsewhere)."""
    if settings.executor != "celery":
        return
    if settings.backend != "postgres":
        raise StackError(
            "the Celery executor needs the PostgreSQL backend (Airflow's CeleryExecutor does "
            "not run on SQLite): run `mlops stack up --backend postgres --executor celery`, "
            "or `--executor local`"
        )
    taken = set(settings.celery_queues.split(","))
    for queue in (DEFAULT_QUEUE, TRAINING_QUEUE):
        if queue not in taken:
            log(
                f"no worker of this stack takes the {queue!r} queue: its tasks wait for a "
                f"worker elsewhere (`airflow celery worker --queues {queue}`)"
            )


def _redis_service(settings: Settings) -> Service:
    return Service(
        name="redis",
        port=settings.redis_port,
        url=f"redis://{settings.host}:{settings.redis_port}",
        command=lambda: [redis.server_binary(), str(redis.config_file(settings))],
        health=lambda: redis.healthy(settings),
        env=lambda: base_env(settings),
    )


def worker_names(settings: Settings) -> list[str]:
    return [f"{WORKER_PREFIX}{i}" for i in range(1, settings.celery_workers + 1)]


def _worker_services(settings: Settings) -> list[Service]:
    """``airflow celery worker`` processes, each with its own name and folder; they share
    nothing on disk with the scheduler but Airflow's log folder, from which the API server
    reads task logs (so they serve none: no listener beyond the stack's own)."""

    def worker(name: str) -> Service:
        celery_name = f"{name}@{socket.gethostname()}"

        def env() -> dict[str, str]:
            # The tasks it forks start with the libraries loaded (airflow_local_settings.py)
            # and know whose they are (MLflow tags each AutoML trial with the worker).
            return airflow_env(settings) | {
                "MLOPS_AIRFLOW_PRELOAD": "1",
                "MLOPS_WORKER_NAME": celery_name,
            }

        return Service(
            name=name,
            port=None,
            url=None,
            command=lambda: [
                _bin("airflow"),
                "celery",
                "worker",
                "--celery-hostname",
                celery_name,
                "--queues",
                settings.celery_queues,
                "--concurrency",
                str(settings.celery_worker_concurrency),
                "--skip-serve-logs",
            ],
            health=lambda: worker_answers(settings, celery_name),
            env=env,
            workdir=settings.stack_dir / "workers" / name,
        )

    return [worker(name) for name in worker_names(settings)]


def worker_answers(settings: Settings, celery_name: str, timeout: float = 2.0) -> bool:
    """Whether the Celery worker answers a ping through the broker."""
    from celery import Celery  # only in celery mode

    app = Celery(broker=redis.broker_url(settings))
    try:
        replies = app.control.ping(destination=[celery_name], timeout=timeout)
    except Exception:  # broker down or unreachable: not healthy
        return False
    finally:
        app.close()
    return any(celery_name in reply for reply in replies)


def _postgres_service(settings: Settings) -> Service:
    return Service(
        name="postgres",
        port=settings.postgres_port,
        url=f"postgresql://{settings.pg_host}:{settings.postgres_port}",
        # Looked up only when starting: status() builds the list on every poll.
        command=lambda: pg.server_command(settings, pg.install_postgres(settings)),
        health=lambda: pg.is_ready(settings),
        env=lambda: base_env(settings),
        user=pg.server_user(),
    )


ACL, BASIC = "acl", "basic"


def lakefs_auth(settings: Settings) -> str:
    """How lakeFS authorises: with its ACL server (users and groups; every new stack), or
    its single admin user (stacks whose lakeFS was set up before the ACL server came)."""
    recorded = read_state(settings).get("lakefs_auth")
    if recorded:
        return str(recorded)
    metadata = settings.stack_dir / "lakefs" / "metadata"
    return BASIC if metadata.is_dir() and any(metadata.iterdir()) else ACL


def runs_acl_server(settings: Settings) -> bool:
    """True when this stack was brought up with lakeFS's ACL server (so deployments get
    users of their own); False elsewhere, e.g. in docker-compose, where lakeFS has its admin
    user only and no stack state is recorded."""
    return read_state(settings).get("lakefs_auth") == ACL


def _acl_url(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.lakefs_acl_port}"


ACL_CONFIG = """# lakeFS's ACL server, as the local stack runs it (its key comes by environment).
listen_address: {listen}
database:
  type: local
  local:
    path: {path}
"""


def _lakefs_acl_service(settings: Settings) -> Service:
    folder = settings.stack_dir / "lakefs" / "acl"

    def acl_env() -> dict[str, str]:
        secret = settings.secret("lakefs_encrypt_secret")
        return base_env(settings) | {"ACLSERVER_ENCRYPT_SECRET_KEY": secret}

    return Service(
        name="lakefs-acl",
        port=settings.lakefs_acl_port,
        url=_acl_url(settings),
        command=lambda: [
            str(ensure_lakefs_binary(settings, "lakefs-acl")),
            "run",
            "--config",
            str(folder / "acl.yaml"),
        ],
        health=lambda: http_ok(f"{_acl_url(settings)}/_health"),
        env=acl_env,
        health_url=f"{_acl_url(settings)}/_health",
    )


def _lakefs_service(settings: Settings) -> Service:
    lakefs_dir = settings.stack_dir / "lakefs"
    acl = (
        {
            "LAKEFS_AUTH_API_ENDPOINT": f"{_acl_url(settings)}/api/v1",
            "LAKEFS_AUTH_UI_CONFIG_RBAC": "simplified",
        }
        if lakefs_auth(settings) == ACL
        else {}
    )

    def lakefs_env() -> dict[str, str]:
        return (
            base_env(settings)
            | {
                "LAKEFS_LISTEN_ADDRESS": f"{settings.host}:{settings.lakefs_port}",
                "LAKEFS_DATABASE_TYPE": "local",
                "LAKEFS_DATABASE_LOCAL_PATH": str(lakefs_dir / "metadata"),
                "LAKEFS_BLOCKSTORE_TYPE": "local",
                "LAKEFS_BLOCKSTORE_LOCAL_PATH": str(lakefs_dir / "data"),
                "LAKEFS_AUTH_ENCRYPT_SECRET_KEY": settings.secret("lakefs_encrypt_secret"),
                "LAKEFS_INSTALLATION_USER_NAME": settings.lakefs_admin_user,
                "LAKEFS_INSTALLATION_ACCESS_KEY_ID": settings.secret("lakefs_access_key_id"),
                "LAKEFS_INSTALLATION_SECRET_ACCESS_KEY": settings.secret(
                    "lakefs_secret_access_key"
                ),
                "LAKEFS_STATS_ENABLED": "false",
                "LAKEFS_LOGGING_LEVEL": "INFO",
            }
            | acl
        )

    return Service(
        name="lakefs",
        port=settings.lakefs_port,
        url=settings.lakefs_url,
        command=lambda: [str(ensure_lakefs_binary(settings)), "run"],
        health=lambda: http_ok(f"{settings.lakefs_url}/api/v1/healthcheck"),
        env=lakefs_env,
        health_url=f"{settings.lakefs_url}/api/v1/healthcheck",
    )


AUTH_CONFIG = """[mlflow]
default_permission = READ
database_uri = {database_uri}
admin_username = {admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
"""


def mlflow_auth_config(settings: Settings) -> Path:
    """MLflow's auth app configuration: its user database beside the tracking data."""
    return settings.stack_dir / "mlflow" / "basic_auth.ini"


def _write_mlflow_auth_config(settings: Settings) -> None:
    database = f"sqlite:///{settings.stack_dir / 'mlflow' / 'basic_auth.db'}"
    text = AUTH_CONFIG.format(database_uri=database, admin=settings.mlflow_user)
    write_private(mlflow_auth_config(settings), text)


def _mlflow_service(settings: Settings) -> Service:
    host, port = settings.host, settings.mlflow_port
    mlflow_dir = settings.stack_dir / "mlflow"

    def mlflow_env() -> dict[str, str]:
        # Secrets go by environment, never on the command line (visible in /proc).
        return base_env(settings) | {
            "MLFLOW_BACKEND_STORE_URI": mlflow_backend_uri(settings),
            "MLFLOW_AUTH_CONFIG_PATH": str(mlflow_auth_config(settings)),
            "MLFLOW_AUTH_ADMIN_USERNAME": settings.mlflow_user,
            "MLFLOW_AUTH_ADMIN_PASSWORD": settings.secret("mlflow_password"),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": settings.secret("mlflow_secret_key"),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }

    return Service(
        name="mlflow",
        port=port,
        url=settings.mlflow_url,
        command=lambda: [
            _bin("mlflow"),
            "server",
            "--app-name",
            "basic-auth",
            "--artifacts-destination",
            str(mlflow_dir / "artifacts"),
            "--serve-artifacts",
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            str(settings.mlflow_workers),
            "--allowed-hosts",
            f"{host}:{port},localhost:{port},{host},localhost",
        ],
        health=lambda: http_ok(f"{settings.mlflow_url}/health"),
        env=mlflow_env,
        health_url=f"{settings.mlflow_url}/health",
    )


def _gateway_service(settings: Settings) -> Service:
    return Service(
        name="serving-gateway",
        port=settings.serving_port,
        url=settings.serving_base_url,
        command=lambda: gateway.command(settings),
        health=lambda: http_ok(f"{settings.serving_base_url}/healthz"),
        env=lambda: base_env(settings),
        health_url=f"{settings.serving_base_url}/healthz",
    )


def _airflow_services(settings: Settings) -> list[Service]:
    def af_env() -> dict[str, str]:
        return airflow_env(settings)

    def scheduler_env() -> dict[str, str]:
        # Its LocalExecutor forks the tasks: they start with the task modules imported
        # (plugins/airflow_local_settings.py).
        return airflow_env(settings) | {"MLOPS_AIRFLOW_PRELOAD": "1"}

    api = Service(
        name="airflow-api-server",
        port=settings.airflow_port,
        url=settings.airflow_base_url,
        command=lambda: [_bin("airflow"), "api-server"],
        health=lambda: http_ok(f"{settings.airflow_base_url}/api/v2/monitor/health"),
        env=af_env,
        health_url=f"{settings.airflow_base_url}/api/v2/monitor/health",
    )
    components = [
        Service(
            name=f"airflow-{comp}",
            port=None,
            url=None,
            command=lambda comp=comp: [_bin("airflow"), comp],
            health=_airflow_component_health(settings, comp.replace("-", "_")),
            env=scheduler_env if comp == "scheduler" else af_env,
        )
        for comp in AIRFLOW_COMPONENTS
    ]
    return [api, *components]


def _proc(settings: Settings, name: str) -> ManagedProcess:
    stop = signal.SIGINT if name == "postgres" else signal.SIGTERM  # its fast shutdown
    return ManagedProcess(name, settings.stack_dir / "run", settings.stack_dir / "logs", stop)


def _prepare(settings: Settings, svc: Service, log: Log) -> None:
    """One-time work before a service starts (directories, migrations)."""
    if svc.name == "lakefs":
        for sub in ("metadata", "data"):
            (settings.stack_dir / "lakefs" / sub).mkdir(parents=True, exist_ok=True)
    elif svc.name == "lakefs-acl":
        folder = settings.stack_dir / "lakefs" / "acl"
        folder.mkdir(parents=True, exist_ok=True)
        listen = f"{settings.host}:{settings.lakefs_acl_port}"
        write_private(folder / "acl.yaml", ACL_CONFIG.format(listen=listen, path=folder / "db"))
    elif svc.name == "mlflow":
        (settings.stack_dir / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
        _write_mlflow_auth_config(settings)
    elif svc.name == "serving-gateway":
        gateway.write_config(settings)
    elif svc.name == "postgres":
        pg.init_cluster(settings, pg.install_postgres(settings, log=log), log=log)
    elif svc.name == "redis":
        redis.server_binary(log=log)
        redis.write_config(settings)
    elif svc.name == "airflow-api-server":
        home = settings.stack_dir / "airflow"
        home.mkdir(parents=True, exist_ok=True)
        pw = home / "passwords.json"
        write_private(pw, json.dumps({settings.airflow_user: settings.secret("airflow_password")}))
        log("migrating the Airflow metadata database...")
        proc = subprocess.run(
            [_bin("airflow"), "db", "migrate"],
            env=svc.env(),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise StackError(
                f"airflow db migrate failed ({airflow_db_url(settings).split('@')[-1]}):\n"
                f"{(proc.stdout + proc.stderr)[-3000:]}"
            )


# Services whose dependants may only start once they are healthy.
WAIT_BEFORE_DEPENDANTS = ("postgres", "redis", "lakefs-acl", "mlflow", "airflow-api-server")


def _no_op(_settings: Settings, _log: Log) -> None:
    return None


class ServiceStatus(TypedDict):
    """One row of ``stack status``: a service (or, from a hook, a project's endpoint)."""

    service: str
    state: str
    url: str | None
    pid: int | None
    log: str
    model_version: NotRequired[int]
    bento_tag: NotRequired[str]
    runtime: NotRequired[str]
    deployment: NotRequired[int]
    # A replica of a deployment: its index (0 keeps the project's own row name) and address.
    replica: NotRequired[int]
    replica_url: NotRequired[str]


def _no_rows(_settings: Settings) -> list[ServiceStatus]:
    return []


@dataclass(frozen=True)
class StackHooks:
    """What runs around the services without the stack knowing it (e.g. deployments):
    ``after_up`` once every service is healthy, ``before_down`` before any stops, and
    ``status`` rows listed after the services'."""

    after_up: Callable[[Settings, Log], object] = _no_op
    before_down: Callable[[Settings, Log], object] = _no_op
    status: Callable[[Settings], list[ServiceStatus]] = _no_rows


def _secure_stack_dir(settings: Settings) -> None:
    """The stack folder is private (0700); only the PostgreSQL server's group may traverse it
    when the server runs as its own OS user."""
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.stack_dir, 0o700)
    if settings.backend == "postgres":
        pg.allow_server_traversal(settings)


def _replace_old_gateway(settings: Settings, log: Log) -> None:
    """A serving gateway from before nginx is stopped, so that this `up` starts nginx."""
    proc = gateway.process(settings)
    if proc.is_running() and gateway.running_nginx(settings) is None:
        log("serving-gateway: replacing the previous gateway with nginx")
        proc.stop()


def _port_setting(service: str) -> str:
    """The setting that moves a service's port (``lakefs-acl`` -> ``lakefs_acl_port``)."""
    if service == "lakefs-acl":
        return "lakefs_acl_port"
    return f"{service.split('-')[0]}_port"


def up(
    settings: Settings, *, log: Log = print, hooks: StackHooks | None = None
) -> list[ServiceStatus]:
    """Start every service not already running and wait until all are healthy.

    On failure, the services started by this call are stopped again and a
    StackError names the service and the cause.
    """
    hooks = hooks or StackHooks()
    check_executor(settings, log)
    generated = ensure_credentials(settings)
    if generated:
        settings = reload_settings(settings)
        log(f"generated local credentials in {settings.credentials_file}")
    _secure_stack_dir(settings)
    _replace_old_gateway(settings, log)
    _refuse_changed_choices(settings)
    if settings.executor == "celery":  # installed before the port checks below
        redis.server_binary(log=log)
    _stop_surplus_workers(settings, log)
    choices = {k: getattr(settings, k) for k in STACK_CHOICES}
    _write_state(settings, **choices, lakefs_auth=lakefs_auth(settings))
    svcs = services(settings)
    procs = {s.name: _proc(settings, s.name) for s in svcs}

    to_start = [s for s in svcs if not procs[s.name].is_running()]
    for svc in svcs:
        if svc not in to_start:
            log(f"{svc.name}: already running (pid {procs[svc.name].read_pid()})")
    # Fail fast on busy ports, before anything starts.
    busy = [s for s in to_start if s.port is not None and port_in_use(settings.host, s.port)]
    if busy:
        raise StackError(
            "; ".join(f"port {s.port} for {s.name} is already in use" for s in busy)
            + " (another process holds it; stop it or choose another port with "
            + ", ".join(f"MLOPS_{_port_setting(s.name).upper()}" for s in busy)
            + ")"
        )
    started: list[str] = []
    try:
        for svc in svcs:
            proc = procs[svc.name]
            if svc in to_start:
                _prepare(settings, svc, log)
                workdir = svc.workdir or settings.stack_dir
                workdir.mkdir(parents=True, exist_ok=True)
                pid = proc.start(svc.command(), env=svc.env(), cwd=workdir, user=svc.user)
                started.append(svc.name)
                log(f"{svc.name}: started (pid {pid}, log {proc.log_file})")
                if svc.name in WAIT_BEFORE_DEPENDANTS:
                    proc.wait_healthy(svc.health, settings.start_timeout)
            if svc.name == "postgres":
                # Also on a running cluster: one made by an older version may lack a database.
                created = pg.ensure_databases(settings)
                if created:
                    log(f"created PostgreSQL databases: {', '.join(created)}")
        for svc in to_start:
            procs[svc.name].wait_healthy(svc.health, settings.start_timeout)
    except BaseException:
        for name in reversed(started):
            procs[name].stop()
        raise
    hooks.after_up(settings, log)
    return status(settings, hooks)


def down(
    settings: Settings, *, log: Log = print, hooks: StackHooks | None = None
) -> dict[str, str]:
    """Stop what `up` started (by pid file), dependants first; the hooks' processes first."""
    hooks = hooks or StackHooks()
    hooks.before_down(settings, log)
    result = {}
    for name in [*_started_workers(settings), *reversed(SERVICE_NAMES)]:
        started = time.monotonic()
        outcome = _proc(settings, name).stop()
        result[name] = outcome
        log(f"{name}: {outcome} ({time.monotonic() - started:.1f} s)")
    return result


def _refuse_changed_choices(settings: Settings) -> None:
    """A running stack keeps its backend, executor and queues: changing them takes a
    `down` first (the number of Celery workers may change while it runs)."""
    recorded = read_state(settings)
    if not _anything_running(settings):
        return
    choices = ["backend", "executor"]
    if settings.executor == "celery" and recorded.get("executor") == "celery":
        choices.append("celery_queues")
    for choice in choices:
        was, now = recorded.get(choice), getattr(settings, choice)
        if was is not None and was != now:
            raise StackError(
                f"the stack is running with {choice} {was}; run `mlops stack down` before "
                f"starting it with {choice} {now}"
            )


def _started_workers(settings: Settings) -> list[str]:
    """Celery workers with a pid file, whatever the settings say now."""
    run = settings.stack_dir / "run"
    return sorted(p.stem for p in run.glob(f"{WORKER_PREFIX}*.pid"))


def _stop_surplus_workers(settings: Settings, log: Log) -> None:
    """Workers of an earlier `up` that this one does not run (fewer workers, or none)."""
    keep = set(worker_names(settings)) if settings.executor == "celery" else set()
    for name in _started_workers(settings):
        if name not in keep and _proc(settings, name).is_running():
            log(f"{name}: {_proc(settings, name).stop()} (not in this stack)")


def status(settings: Settings, hooks: StackHooks | None = None) -> list[ServiceStatus]:
    """State, URL, pid and log path of each service, then the hooks' rows."""
    hooks = hooks or StackHooks()
    rows: list[ServiceStatus] = []
    for svc in services(settings):
        proc = _proc(settings, svc.name)
        pid = proc.read_pid()
        if pid is None:
            state = "stale" if proc.has_stale_pid_file() else "stopped"
            if svc.port and port_in_use(settings.host, svc.port):
                state += " (port held by another process)"
        else:
            state = "healthy" if svc.health() else "unhealthy"
        rows.append(
            {
                "service": svc.name,
                "state": state,
                "url": svc.url,
                "pid": pid,
                "log": str(proc.log_file),
            }
        )
    return rows + hooks.status(settings)


def last_log_lines(settings: Settings, name: str, lines: int = 20) -> str:
    """Tail of one service's log."""
    return tail(_proc(settings, name).log_file, lines)
