"""The serving gateway (nginx) under load and abuse: body limit, per-project in-flight cap
with an immediate 503 and Retry-After, slow clients, unknown and unavailable projects, and a
route switch that drops no request.

Behind the gateway stands a slow model server (answers after a set delay), so that requests
are in flight long enough to fill the cap.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from mlops_lib.settings import Settings, load_settings
from mlops_lib.stack import gateway
from mlops_lib.stack.procs import ManagedProcess, free_port, http_ok

from .conftest import wait_for

pytestmark = pytest.mark.integration


class _SlowModel(BaseHTTPRequestHandler):
    delay = 0.0
    name = ""
    in_flight: list[int] = []  # one counter per model server class

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.in_flight[0] += 1
        time.sleep(self.delay)
        self.in_flight[0] -= 1
        body = json.dumps({"served_by": self.name}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def model_server(name: str, delay: float) -> ThreadingHTTPServer:
    attrs = {"delay": delay, "name": name, "in_flight": [0]}
    handler = type(f"Model_{name}", (_SlowModel,), attrs)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """nginx as the stack runs it, on its own folder and port."""
    settings = load_settings(
        stack_dir=tmp_path_factory.mktemp("gateway-stack"),
        serving_port=free_port(),
        gateway_max_in_flight=4,
        gateway_max_body_mb=1,
    )
    gateway.write_config(settings)
    proc = ManagedProcess(gateway.SERVICE, settings.stack_dir / "run", settings.stack_dir / "logs")
    proc.start(gateway.command(settings), env={}, cwd=settings.stack_dir)
    proc.wait_healthy(lambda: http_ok(f"{settings.serving_base_url}/healthz"), 30)
    yield settings
    proc.stop()


def route(settings: Settings, project: str, server: ThreadingHTTPServer, deployment: int) -> None:
    port = server.server_address[1]
    gateway.write_route(settings.stack_dir, project, {"port": port, "deployment": deployment})
    gateway.apply_routes(settings)


def test_unknown_project_is_404_and_a_dead_deployment_503_naming_it(gw: Settings) -> None:
    gateway.write_route(gw.stack_dir, "gone", {"port": free_port(), "deployment": 41})
    gateway.apply_routes(gw)
    missing = httpx.post(f"{gw.serving_base_url}/fraud/predict", json={})
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no deployment serves project 'fraud'"}
    dead = httpx.post(f"{gw.serving_base_url}/gone/predict", json={})
    assert dead.status_code == 503 and "deployment 41 of 'gone'" in dead.json()["detail"]
    assert dead.headers["retry-after"] == "5"


def test_a_body_over_the_limit_is_413_and_never_reaches_the_model(gw: Settings) -> None:
    model = model_server("big", 0)
    route(gw, "big", model, 1)
    resp = httpx.post(f"{gw.serving_base_url}/big/predict", content=b"x" * (2 * 1024 * 1024))
    assert resp.status_code == 413 and "1 MB" in resp.json()["detail"]
    assert httpx.post(f"{gw.serving_base_url}/big/predict", json={}).status_code == 200


def test_a_full_project_gets_503_with_retry_after_at_once_and_others_are_served(
    gw: Settings,
) -> None:
    slow, other = model_server("slow", 2.0), model_server("other", 0)
    route(gw, "slow", slow, 2)
    route(gw, "other", other, 3)

    def call(project: str) -> tuple[int, float, str | None]:
        started = time.monotonic()
        resp = httpx.post(f"{gw.serving_base_url}/{project}/predict", json={}, timeout=30)
        return resp.status_code, time.monotonic() - started, resp.headers.get("retry-after")

    with ThreadPoolExecutor(max_workers=12) as pool:
        flood = [pool.submit(call, "slow") for _ in range(10)]
        wait_for(lambda: slow.RequestHandlerClass.in_flight[0] == 4, "4 requests in flight")
        other_status, other_seconds, _ = call("other")
        results = [f.result() for f in flood]
    served = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 503]
    assert len(served) == 4 and len(refused) == 6, results
    assert all(seconds < 1.0 and after == "1" for _, seconds, after in refused), refused
    assert other_status == 200 and other_seconds < 1.0


def test_slow_clients_do_not_hold_anyone_else(gw: Settings) -> None:
    model = model_server("quick", 0)
    route(gw, "quick", model, 4)
    host, port = gw.host, gw.serving_port
    trickling = []
    for _ in range(50):  # connections that send half a request and then nothing
        sock = socket.create_connection((host, port))
        sock.sendall(b"POST /quick/predict HTTP/1.1\r\nHost: x\r\nContent-Le")
        trickling.append(sock)
    try:
        started = time.monotonic()
        resp = httpx.post(f"{gw.serving_base_url}/quick/predict", json={}, timeout=10)
        assert resp.status_code == 200 and time.monotonic() - started < 1.0
    finally:
        for sock in trickling:
            sock.close()


def test_switching_routes_drops_no_request(gw: Settings) -> None:
    blue, green = model_server("blue", 0.01), model_server("green", 0.01)
    route(gw, "live", blue, 5)
    stop = threading.Event()
    outcomes: list[tuple[int, str]] = []

    def traffic() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                resp = client.post(f"{gw.serving_base_url}/live/predict", json={})
                outcomes.append((resp.status_code, resp.json().get("served_by", "")))

    workers = [threading.Thread(target=traffic) for _ in range(4)]
    for w in workers:
        w.start()
    wait_for(lambda: len(outcomes) >= 20, "traffic to blue")
    route(gw, "live", green, 6)
    switched = len(outcomes)
    wait_for(lambda: len(outcomes) >= switched + 20, "traffic after the switch")
    stop.set()
    for w in workers:
        w.join()
    assert outcomes and all(status == 200 for status, _ in outcomes), [
        o for o in outcomes if o[0] != 200
    ][:5]
    assert outcomes[-1][1] == "green" and outcomes[0][1] == "blue"


def test_gateway_listens_on_localhost_only(gw: Settings) -> None:
    conf = Path(gateway.config_file(gw)).read_text()
    assert f"listen 127.0.0.1:{gw.serving_port}" in conf
    check = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True)
    if check.returncode == 0:
        bound = [line for line in check.stdout.splitlines() if f":{gw.serving_port} " in line]
        assert bound and all("127.0.0.1:" in line for line in bound), bound
