"""The stable serving endpoint: ``http://<host>:<serving_port>/<project>/<path>``.

A small asynchronous reverse proxy in front of the deployments. Its route table
(``<stack_dir>/serving/routes.json``, project -> port of the active deployment) is written
atomically by a deployment's switch and by rollback, and re-read when it changes, so a new
model version takes over between two requests without the endpoint moving or dropping one.

    python -m mlops_lib.serving.gateway      # started by `mlops stack up`
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mlops_lib.settings import get_settings

# Hop-by-hop headers are not forwarded (RFC 9110 7.6.1), nor is the client's Host.
_SKIP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"}


def routes_file(stack_dir: Path) -> Path:
    return Path(stack_dir) / "serving" / "routes.json"


def read_routes(stack_dir: Path) -> dict[str, dict[str, Any]]:
    """Project -> route (port, deployment id, model version, bento tag)."""
    try:
        return json.loads(routes_file(stack_dir).read_text())
    except (OSError, ValueError):
        return {}


def write_route(stack_dir: Path, project: str, route: dict[str, Any] | None) -> None:
    """Point a project at a deployment (``None`` removes it); atomic for readers.

    Writers take an exclusive lock around read-modify-write, so two projects switching at
    once (or a rollback during a deploy) both keep their route."""
    path = routes_file(stack_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        routes = read_routes(stack_dir)
        if route is None:
            routes.pop(project, None)
        else:
            routes[project] = route
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(routes, indent=2))
        os.replace(tmp, path)


class RouteTable:
    """The route file, re-read at most every ``interval`` seconds and only when changed."""

    def __init__(self, stack_dir: Path, interval: float = 0.25) -> None:
        self.stack_dir = Path(stack_dir)
        self.interval = interval
        self._checked = 0.0
        self._mtime: float | None = None
        self.routes: dict[str, dict[str, Any]] = {}

    def get(self, project: str) -> dict[str, Any] | None:
        now = time.monotonic()
        if now - self._checked >= self.interval:
            self._checked = now
            try:
                mtime = routes_file(self.stack_dir).stat().st_mtime_ns
            except OSError:
                mtime = None
            if mtime != self._mtime:
                self._mtime = mtime
                self.routes = read_routes(self.stack_dir)
        return self.routes.get(project)


def create_app(stack_dir: Path, upstream_host: str = "127.0.0.1"):
    """The gateway's ASGI app."""
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    table = RouteTable(stack_dir)
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(60.0, connect=5.0),
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        trust_env=False,
    )

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok", "projects": sorted(read_routes(stack_dir))})

    async def index(_: Request) -> Response:
        return JSONResponse(read_routes(stack_dir))

    async def proxy(request: Request) -> Response:
        project = request.path_params["project"]
        route = table.get(project)
        if route is None:
            return JSONResponse(
                {"detail": f"no deployment serves project {project!r}"}, status_code=404
            )
        url = f"http://{upstream_host}:{route['port']}/{request.path_params['path']}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP}
        try:
            upstream = await client.request(
                request.method,
                url,
                params=request.query_params,
                content=await request.body(),
                headers=headers,
            )
        except httpx.HTTPError as exc:
            return JSONResponse(
                {
                    "detail": f"deployment {route.get('deployment')} of {project!r} "
                    f"(port {route['port']}) is unavailable: {type(exc).__name__}"
                },
                status_code=503,
            )
        out = {k: v for k, v in upstream.headers.items() if k.lower() not in _SKIP}
        out.pop("content-encoding", None)
        out["x-mlops-deployment"] = str(route.get("deployment", ""))
        return Response(upstream.content, status_code=upstream.status_code, headers=out)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
    return Starlette(
        routes=[
            Route("/healthz", health),
            Route("/", index),
            Route("/{project}/{path:path}", proxy, methods=methods),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    """Serve the gateway on the configured host and serving port."""
    import uvicorn  # kept out of DAG parsing

    settings = get_settings()
    uvicorn.run(
        create_app(settings.stack_dir),
        host=settings.host,
        port=settings.serving_port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
