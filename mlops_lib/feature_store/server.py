"""The project's Feast feature server (``feast serve``): started, found, checked, stopped.

One server per project with features, bound to the stack's host (127.0.0.1 by default),
serving the repo ``current`` points at (the last commit materialized). It is a process of
the stack like a deployment: the features DAG starts it when it is not running, ``mlops
stack up`` brings it back when a commit has been published, ``stack status`` shows its
health and ``stack down`` stops it. Its address goes to ``server.json`` for the services
that look features up online.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlops_lib.feature_store import paths
from mlops_lib.feature_store.runner import feast_env, feast_python
from mlops_lib.settings import Settings
from mlops_lib.stack.manager import Log, ServiceStatus
from mlops_lib.stack.procs import (
    ManagedProcess,
    file_lock,
    http_ok,
    port_in_use,
    write_atomically,
)

HEALTH = "/health"
# Seconds between registry reloads: a newly published commit is served within this time.
REGISTRY_TTL_SECONDS = 5


def process(settings: Settings, project: str) -> ManagedProcess:
    return ManagedProcess(
        f"features-{project}", settings.stack_dir / "run", settings.stack_dir / "logs"
    )


def address(settings: Settings, project: str) -> str | None:
    """The URL the server was started on, if it was."""
    try:
        return str(json.loads(paths.server_file(settings, project).read_text())["url"])
    except (OSError, ValueError, KeyError):
        return None


def healthy(settings: Settings, project: str) -> bool:
    url = address(settings, project)
    return bool(url) and process(settings, project).is_running() and http_ok(url + HEALTH)


def ensure_running(project: str, settings: Settings) -> str:
    """The server's URL, started first when it is not running and healthy (a server of
    its own, ``settings.feature_server_url``, is only checked: it reloads the registry of
    ``current`` by itself)."""
    if settings.feature_server_url:
        return settings.feature_server_url.rstrip("/")
    paths.store_dir(settings, project).mkdir(parents=True, exist_ok=True)
    # One lock for every project's server: two starting at once would pick the same port.
    with file_lock(settings.stack_dir / "features" / ".servers.lock"):
        if healthy(settings, project):
            return str(address(settings, project))
        return start(project, settings)


def start(project: str, settings: Settings) -> str:
    """Start (or restart) the server on the current repo; wait until it answers."""
    repo = paths.current_repo(settings, project)
    if not repo.exists():
        raise FileNotFoundError(f"no published feature views of {project!r} to serve ({repo})")
    proc = process(settings, project)
    proc.stop()
    port = _port(settings, project)
    feast = Path(feast_python(settings)).with_name("feast")
    cmd = [
        str(feast),
        "-c",
        str(repo),
        "serve",
        "-h",
        settings.host,
        "-p",
        str(port),
        "--no-access-log",
        # Feast's default recycles the worker every ~1,000 requests, failing those in
        # flight (503s at serving): the server holds no state that would need recycling.
        "--max-requests",
        "0",
        "-r",
        str(REGISTRY_TTL_SECONDS),
    ]
    proc.start(cmd, env=feast_env(), cwd=repo.parent)
    url = f"http://{settings.host}:{port}"
    try:
        proc.wait_healthy(lambda: http_ok(url + HEALTH), settings.start_timeout)
    except Exception:
        proc.stop()  # never left running unseen: nothing would stop it
        raise
    record = json.dumps({"url": url, "pid": proc.read_pid()})
    write_atomically(paths.server_file(settings, project), record)
    return url


def stop(settings: Settings, project: str) -> str:
    return process(settings, project).stop()


def _port(settings: Settings, project: str) -> int:
    """The port it had before when free, else the first free one from the base port."""
    before = address(settings, project)
    if before:
        port = int(before.rsplit(":", 1)[1])
        if not port_in_use(settings.host, port):
            return port
    port = settings.feature_server_port
    while port_in_use(settings.host, port):
        port += 1
    return port


def projects_served(settings: Settings) -> list[str]:
    """Projects whose views were published on this stack, or whose server was started."""
    root = settings.stack_dir / "features"
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir()
        and (
            paths.current_file(settings, p.name).exists()
            or process(settings, p.name).pid_file.exists()
        )
    )


def restore(settings: Settings, log: Log = print) -> None:
    """Start the server of every project whose views were published (after ``stack up``)."""
    for project in projects_served(settings):
        try:
            log(f"feature server of {project}: {ensure_running(project, settings)}")
        except Exception as exc:  # one project's server does not keep the stack down
            log(f"feature server of {project} did not start: {exc}")


def stop_all(settings: Settings, log: Log = print) -> None:
    for project in projects_served(settings):
        log(f"feature server of {project}: {stop(settings, project)}")


def status(settings: Settings) -> list[ServiceStatus]:
    """One row per project with published views: ``features/<project>``."""
    rows: list[ServiceStatus] = []
    for project in projects_served(settings):
        proc = process(settings, project)
        running = proc.is_running()
        url = address(settings, project)
        state = "stopped"
        if running:
            state = "healthy" if url and http_ok(url + HEALTH) else "unhealthy"
        rows.append(
            {
                "service": f"features/{project}",
                "state": state,
                "url": url if running else None,
                "pid": proc.read_pid(),
                "log": str(proc.log_file),
            }
        )
    return rows
