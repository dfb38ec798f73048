"""The MLOps page of the Airflow UI, in a real headless Chromium against the running stack.

The browser signs in as the UI does (Airflow's session cookie) and saves a screenshot of the
page to ``test-output/ui/mlops-page.png``; without signing in the page and its JSON are 401.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from mlops_lib.airflow_api import AirflowClient
from mlops_lib.settings import Settings
from mlops_lib.stack.debian import find_browser

from .conftest import airflow_token

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output" / "ui"


def _devtools_port(profile: Path, proc: subprocess.Popen, deadline: float) -> int:
    active = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if active.is_file() and active.read_text().strip():
            return int(active.read_text().split()[0])
        assert proc.poll() is None, "Chromium exited during start-up"
        time.sleep(0.2)
    raise AssertionError("Chromium's DevTools port did not appear within the deadline")


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop Chromium and every helper process it started (its own process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)


class _Page:
    """One page of a browser, driven over the DevTools protocol."""

    def __init__(self, ws) -> None:
        self.ws, self.next_id = ws, 0

    def call(self, method: str, until_event: str | None = None, **params: object) -> dict:
        """Send one command; return its result (or, given ``until_event``, that event's)."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        result: dict | None = None
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.next_id:
                assert "error" not in msg, (method, msg["error"])
                result = msg["result"]
            elif until_event and msg.get("method") == until_event:
                return msg["params"]
            if result is not None and until_event is None:
                return result


def browse_signed_in(url: str, token: str, screenshot: Path) -> str:
    """Open ``url`` in headless Chromium signed in to Airflow (the UI's session cookie);
    save a screenshot, return the DOM."""
    from websockets.sync.client import connect

    browser = find_browser()
    assert browser, "Chromium is not installed: `mlops stack install --browser`"
    # Chromium's helper processes may still write to the profile while they exit: the whole
    # process group is stopped, and what they leave behind does not fail the test.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [
                browser,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1400,2200",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            port = _devtools_port(Path(profile), proc, time.monotonic() + 60)
            targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
            page_ws = next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"]
            with connect(page_ws, max_size=None) as ws:
                page = _Page(ws)
                page.call("Network.setCookie", name="_token", value=token, url=url)
                page.call("Page.enable")
                page.call("Page.navigate", until_event="Page.loadEventFired", url=url)
                shot = page.call("Page.captureScreenshot", format="png")
                screenshot.write_bytes(base64.b64decode(shot["data"]))
                dom = page.call(
                    "Runtime.evaluate",
                    expression="document.documentElement.outerHTML",
                    returnByValue=True,
                )
                return dom["result"]["value"]
        finally:
            _stop_group(proc)


def test_page_and_its_json_need_an_airflow_login(stack: Settings) -> None:
    base = f"{stack.airflow_base_url}/mlops"
    for path in ("/", "/api/projects", "/reports/churn/1"):
        assert httpx.get(f"{base}{path}", timeout=60).status_code == 401, path
    forged = httpx.get(f"{base}/api/projects", cookies={"_token": "forged"}, timeout=60)
    assert forged.status_code in (401, 403)
    signed_in = {"Authorization": f"Bearer {airflow_token(stack)}"}
    assert httpx.get(f"{base}/api/projects", headers=signed_in, timeout=60).status_code == 200


def test_plugin_is_registered_with_airflow(stack: Settings) -> None:
    client = AirflowClient.from_settings(stack)
    plugins = client.request("GET", "/plugins").json()["plugins"]
    mine = next(p for p in plugins if p["name"] == "mlops")
    assert mine["fastapi_apps"][0]["url_prefix"] == "/mlops"
    view = mine["external_views"][0]
    assert view["name"] == "MLOps" and view["destination"] == "nav"


def test_page_shows_every_project_with_its_models_and_drift(stack: Settings) -> None:
    from mlops_lib.lineage import lineage_store
    from mlops_lib.registry import champion_version
    from mlops_lib.spec import discover

    base = f"{stack.airflow_base_url}/mlops"
    signed_in = {"Authorization": f"Bearer {airflow_token(stack)}"}
    api = httpx.get(f"{base}/api/projects", headers=signed_in, timeout=60)
    assert api.status_code == 200, api.text[:500]
    specs, _ = discover(stack.projects_dir)
    assert [p["project"] for p in api.json()] == sorted(specs)

    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = OUTPUT / "mlops-page.png"
    shot.unlink(missing_ok=True)
    dom = browse_signed_in(f"{base}/", airflow_token(stack), shot)
    assert shot.exists() and shot.stat().st_size > 20_000
    store = lineage_store(stack)
    for name in specs:
        assert f'id="project-{name}"' in dom, name
        champion = champion_version(name, stack)
        if champion is not None:
            assert f">v{champion}<" in dom, (name, champion)
        reports = store.drift_reports(name, limit=1)
        if reports:
            rid = reports[0]["id"]
            assert f"reports/{name}/{rid}" in dom
            page = httpx.get(f"{base}/reports/{name}/{rid}", headers=signed_in, timeout=60)
            if not reports[0]["lakefs_uri"]:  # recorded without a page (the page says so)
                assert page.status_code == 404 and "no page stored" in page.text, page.text
                continue
            assert page.status_code == 200, page.text[:500]
            # Whatever ran before: a report of windows with traffic has a chart per column,
            # one of windows without traffic says so.
            if reports[0]["rows"]:
                assert "<svg" in page.text, (name, rid)
            else:
                assert "no traffic in the monitored windows" in page.text, (name, rid)
    missing = httpx.get(f"{base}/reports/churn/999999", headers=signed_in, timeout=60)
    assert missing.status_code == 404
