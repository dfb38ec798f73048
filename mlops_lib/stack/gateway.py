"""The stable serving endpoint: ``http://<host>:<serving_port>/<project>/<path>``, run by nginx.

The route table (``<stack_dir>/serving/routes.json``: project -> the ports of its active
deployment's replicas) is the platform's; nginx's configuration is rendered from it. A switch
or a rollback writes the table (under a lock), renders and checks the configuration, and has
nginx reload it: new connections go to the new deployment, requests in flight finish on the old.

What the proxy holds against (all native nginx): bodies over ``gateway_max_body_mb`` get 413;
each project has at most ``gateway_max_in_flight`` requests in flight, more get 503 with
``Retry-After`` at once; request bodies are read in memory of bounded size and slow clients
are timed out without holding anyone else; upstream calls have connect and read timeouts.

Retries. nginx passes a request that failed on to another server (``proxy_next_upstream
error timeout``, at most 2 tries), a POST only when none of it was sent unless
``non_idempotent`` allows more. A deployment with one replica keeps that default and its one
server is never marked down (``max_fails=0``): a POST that reached it is never sent twice,
and a failure is a 503 naming the deployment. A deployment with several replicas is balanced
by least connections; a replica that fails a connection is taken out for 5 s (``max_fails=1
fail_timeout=5s``) and the request goes to another one, even a POST already sent
(``non_idempotent``): without it, every request in flight on a replica that dies would be a
5xx. Scoring has no effect but its prediction-log row, which a dying replica holds in memory
and loses unless a flush came in between, so a retry costs at worst one duplicate log row. A
read timeout is never retried (the retry budget, ``proxy_next_upstream_timeout``, is the read
timeout): a slow model never gets a request twice. A request that crashes its replica may
crash one more.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from mlops_lib.settings import Settings
from mlops_lib.stack.debian import apt_install
from mlops_lib.stack.procs import ManagedProcess, StackError, file_lock, write_atomically

SERVICE = "serving-gateway"
PACKAGE = "nginx-light"
# Project names as the spec allows them: nothing a URL could smuggle into a config or JSON.
PROJECT_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]*"


def routes_file(stack_dir: Path) -> Path:
    return Path(stack_dir) / "serving" / "routes.json"


def read_routes(stack_dir: Path) -> dict[str, dict[str, Any]]:
    """Project -> route (ports, replica 0's port, deployment id, model version, bento tag)."""
    try:
        return json.loads(routes_file(stack_dir).read_text())
    except (OSError, ValueError):
        return {}


def write_route(stack_dir: Path, project: str, route: dict[str, Any] | None) -> None:
    """Point a project at a deployment (``None`` removes it); atomic for readers.

    Writers take an exclusive lock around read-modify-write, so two projects switching at
    once (or a rollback during a deploy) both keep their route."""
    path = routes_file(stack_dir)
    with file_lock(path.with_suffix(".lock")):
        routes = read_routes(stack_dir)
        if route is None:
            routes.pop(project, None)
        else:
            routes[project] = route
        write_atomically(path, json.dumps(routes, indent=2))


def route_ports(route: dict[str, Any]) -> list[int]:
    """The ports a route sends requests to: its replicas' (``ports``) or, in a route table
    written before replicas, its one ``port``."""
    return [int(port) for port in route.get("ports") or [route["port"]]]


# nginx ---------------------------------------------------------------------------------
def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).is_file()), None
    )


def install_nginx(*, log=print) -> str:
    """Find nginx, installing Debian's package when absent."""
    found = find_nginx()
    if found:
        return found
    apt_install(PACKAGE, log=log, hint="install nginx and put it on PATH")
    found = find_nginx()
    if not found:
        raise StackError("nginx was installed but is not on PATH")
    return found


def prefix(settings: Settings) -> Path:
    """nginx's working folder (its configuration and temporary files)."""
    return settings.stack_dir / "serving" / "nginx"


def config_file(settings: Settings) -> Path:
    return prefix(settings) / "nginx.conf"


def command(settings: Settings) -> list[str]:
    """The gateway in the foreground, its log on stderr (the service log)."""
    return [
        install_nginx(),
        "-p",
        str(prefix(settings)),
        "-c",
        str(config_file(settings)),
        "-e",
        "stderr",
        "-g",
        "daemon off;",
    ]


def _json(value: object) -> str:
    """A JSON document as an nginx string literal (single-quoted)."""
    return json.dumps(value, separators=(",", ":")).replace("\\", "\\\\").replace("'", "\\'")


def _upstream(upstream: str, ports: list[int]) -> str:
    """The servers of one project: its replicas, balanced by least connections, each taken
    out for 5 s after a failed connection; a lone server is never taken out."""
    if len(ports) == 1:
        servers = f"    server 127.0.0.1:{ports[0]} max_fails=0;\n"
    else:  # the balancing method comes before keepalive
        servers = "    least_conn;\n" + "".join(
            f"    server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;\n" for port in ports
        )
    return (
        f"  upstream {upstream} {{\n{servers}"
        f"    keepalive 32;\n"
        # Below the deployment's own idle timeout, so nginx never sends a request on a
        # connection the deployment is closing (with one replica a POST is not retried).
        f"    keepalive_timeout 4s;\n  }}\n"
    )


def _project_block(name: str, route: dict[str, Any], settings: Settings) -> tuple[str, str]:
    """The upstream and the location of one project."""
    upstream = f"mlops_{name}"
    deployment = route.get("deployment", "")
    ports = route_ports(route)
    where = f"port {ports[0]}" if len(ports) == 1 else f"ports {', '.join(map(str, ports))}"
    unavailable = {"detail": f"deployment {deployment} of {name!r} ({where}) is unavailable"}
    # Another replica takes a request whose replica broke, even a POST already sent (see the
    # module's docstring); with one replica there is no other to take it.
    retry = "      proxy_next_upstream error timeout non_idempotent;\n" if len(ports) > 1 else ""
    loc = (
        f"    location /{name}/ {{\n"
        f"      limit_conn inflight {settings.gateway_max_in_flight};\n"
        f"      proxy_pass http://{upstream}/;\n"
        f"{retry}"
        f"      add_header X-MLOps-Deployment {json.dumps(str(deployment))} always;\n"
        # A location's error_page replaces the server's: all three are set here.
        f"      error_page 502 504 = @unavailable_{name};\n"
        f"      error_page 413 = @too_large;\n"
        f"      error_page 503 = @full;\n"
        f"    }}\n"
        f"    location @unavailable_{name} {{\n"
        f"      add_header Retry-After 5 always;\n"
        f"      return 503 '{_json(unavailable)}';\n"
        f"    }}\n"
    )
    return _upstream(upstream, ports), loc


def render_config(routes: dict[str, dict[str, Any]], settings: Settings) -> str:
    """nginx's configuration for a route table."""
    run_as = "user root root;\n" if os.geteuid() == 0 else ""
    blocks = [_project_block(n, r, settings) for n, r in sorted(routes.items())]
    health = {"status": "ok", "projects": sorted(routes)}
    max_mb = settings.gateway_max_body_mb
    too_large = {"detail": f"request body over the gateway's limit of {max_mb:g} MB"}
    full = {"detail": "too many requests in flight for this project; retry later"}
    unknown = _json({"detail": "no deployment serves project '$mlops_project'"})
    tmp = prefix(settings) / "tmp"
    return f"""# Rendered by the platform from the route table; edits are overwritten.
{run_as}worker_processes 1;
pid {prefix(settings) / "nginx.pid"};
events {{ worker_connections 4096; }}
http {{
  access_log off;
  default_type application/json;
  server_tokens off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  client_max_body_size {max_mb:g}m;
  client_body_buffer_size 1m;
  client_header_timeout 10s;
  client_body_timeout 10s;
  send_timeout 30s;
  keepalive_timeout 30s;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_connect_timeout 2s;
  proxy_send_timeout 10s;
  proxy_read_timeout {settings.gateway_upstream_timeout:g}s;
  proxy_next_upstream error timeout;
  proxy_next_upstream_tries 2;
  proxy_next_upstream_timeout {settings.gateway_upstream_timeout:g}s;
  map $uri $mlops_project {{ ~^/(?<p>{PROJECT_PATTERN})/ $p; default ""; }}
  limit_conn_zone $mlops_project zone=inflight:1m;
  limit_conn_status 503;
{"".join(u for u, _ in blocks)}  server {{
    listen {settings.host}:{settings.serving_port} backlog=1024;
    error_page 413 = @too_large;
    error_page 503 = @full;
    location = /healthz {{ return 200 '{_json(health)}'; }}
    location = / {{ return 200 '{_json(routes)}'; }}
{"".join(loc for _, loc in blocks)}    location / {{ return 404 '{unknown}'; }}
    location @too_large {{ return 413 '{_json(too_large)}'; }}
    location @full {{
      add_header Retry-After 1 always;
      return 503 '{_json(full)}';
    }}
  }}
}}
"""


def write_config(settings: Settings) -> dict[str, dict[str, Any]]:
    """Render the configuration from the route table and check it with ``nginx -t`` before
    it replaces the running one (an invalid one raises and changes nothing). Returns the
    routes rendered."""
    folder = prefix(settings)
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    final = config_file(settings)
    candidate = final.with_suffix(f".{os.getpid()}.{threading.get_ident()}.new")
    routes = read_routes(settings.stack_dir)
    candidate.write_text(render_config(routes, settings))
    check = subprocess.run(
        [install_nginx(), "-t", "-q", "-p", str(folder), "-c", str(candidate), "-e", "stderr"],
        capture_output=True,
        text=True,
    )
    if check.returncode != 0:
        candidate.unlink(missing_ok=True)
        raise StackError(f"the gateway's new configuration is invalid:\n{check.stderr[-2000:]}")
    os.replace(candidate, final)
    return routes


def apply_routes(settings: Settings, timeout: float = 30.0) -> None:
    """Reload the running gateway with the current route table and wait until it serves it
    (new connections see the new routes). Without a running gateway nothing is done: it
    renders the table itself when it starts."""
    with file_lock(prefix(settings).parent / "nginx.lock"):
        master = running_nginx(settings)
        if master is None:
            return
        rendered = write_config(settings)
        old_workers = _workers(master)
        os.kill(master, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _still_listening(old_workers) and served_routes(settings) == rendered:
                return
            time.sleep(0.05)
    raise StackError(f"the gateway did not take the new routes within {timeout:.0f}s")


def process(settings: Settings) -> ManagedProcess:
    return ManagedProcess(SERVICE, settings.stack_dir / "run", settings.stack_dir / "logs")


def running_nginx(settings: Settings) -> int | None:
    """Pid of the gateway's nginx master, None when it is not running (or is not nginx: a
    gateway from before nginx, which ``stack up`` replaces)."""
    import psutil

    pid = process(settings).read_pid()
    if pid is None:
        return None
    try:
        return pid if psutil.Process(pid).name() == "nginx" else None
    except psutil.Error:
        return None


def _workers(master: int) -> list:
    import psutil

    try:
        return psutil.Process(master).children()
    except psutil.Error:
        return []


def _still_listening(workers: list) -> bool:
    """True while a worker of the old configuration still accepts connections (after the
    reload it closes its listening sockets and only finishes what is in flight)."""
    import psutil

    for worker in workers:
        try:
            if any(c.status == psutil.CONN_LISTEN for c in worker.net_connections("tcp")):
                return True
        except psutil.Error:
            continue  # gone
    return False


def served_routes(settings: Settings) -> dict[str, Any] | None:
    """The route table the running gateway serves (None when it does not answer)."""
    with contextlib.suppress(httpx.HTTPError, ValueError):
        url = f"http://{settings.host}:{settings.serving_port}/"
        return httpx.get(url, timeout=2, trust_env=False).json()
    return None
