"""The MLOps page of the Airflow UI, in a real headless Chromium against the running stack.

The test saves a screenshot of the page to ``test-output/ui/mlops-page.png``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from mlops_lib.airflow_api import AirflowClient
from mlops_lib.settings import Settings
from mlops_lib.stack.debian import find_browser

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output" / "ui"


def chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    browser = find_browser()
    assert browser, "Chromium is not installed: `mlops stack install --browser`"
    return subprocess.run(
        [
            browser,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--virtual-time-budget=15000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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
    api = httpx.get(f"{base}/api/projects", timeout=60)
    assert api.status_code == 200, api.text[:500]
    specs, _ = discover(stack.projects_dir)
    assert [p["project"] for p in api.json()] == sorted(specs)

    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = OUTPUT / "mlops-page.png"
    shot.unlink(missing_ok=True)
    proc = chromium("--window-size=1400,2200", f"--screenshot={shot}", f"{base}/")
    assert shot.exists() and shot.stat().st_size > 20_000, proc.stderr[-2000:]
    dom = chromium("--dump-dom", f"{base}/").stdout
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
            page = httpx.get(f"{base}/reports/{name}/{rid}", timeout=60)
            assert page.status_code == 200, page.text[:500]
            # Whatever ran before: a report of windows with traffic has a chart per column,
            # one of windows without traffic says so.
            if reports[0]["rows"]:
                assert "<svg" in page.text, (name, rid)
            else:
                assert "no traffic in the monitored windows" in page.text, (name, rid)
    assert httpx.get(f"{base}/reports/churn/999999", timeout=60).status_code == 404
