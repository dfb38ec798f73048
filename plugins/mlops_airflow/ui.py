"""The "MLOps" page of the Airflow UI (an Airflow 3 plugin: a FastAPI app and an external view).

The FastAPI app is mounted by the Airflow API server under ``/mlops``:

* ``/mlops/`` the page: per project its last failure (stage, DAG run, task, cause; marked
  resolved once the stage succeeded since), its champion and challenger with the data commit
  behind each, the drift reports with the latest one's charts, the lineage chain, recent
  deployments, its feature views (features, TTL, the commit they were computed from, their
  freshness, registry hash and the feature server's state), and links into MLflow, lakeFS,
  Airflow and the service;
* ``/mlops/api/projects`` the same as JSON;
* ``/mlops/reports/<project>/<id>`` a stored drift report page.

The external view adds "MLOps" to the navigation, showing the page inside the Airflow UI.
Everything is read-only and behind Airflow's login: a request without a valid Airflow token
(the UI's session cookie or a bearer token) gets 401. The data comes from
``mlops_lib.overview`` (imported per request, in a worker thread, so the API server starts
fast).
"""

from __future__ import annotations

import asyncio

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.security.utils import get_authorization_scheme_param


async def signed_in(request: Request) -> None:
    """Airflow's own user check (bearer token or the UI's session cookie); 401 without one."""
    # Imported per request: the plugin module is loaded by every Airflow process, this only
    # matters in the API server.
    from airflow.api_fastapi.core_api.security import get_user

    scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
    bearer = HTTPAuthorizationCredentials(scheme=scheme, credentials=token) if token else None
    await get_user(request, None, bearer)


app = FastAPI(
    title="MLOps",
    description="Projects, models, drift and deployments.",
    dependencies=[Depends(signed_in)],
)
REPORT_HREF = "reports/{project}/{id}"


def _overview() -> list[dict]:
    from mlops_lib.overview import overview

    return overview()


@app.get("/api/projects")
async def projects() -> list[dict]:
    """Every project's overview as JSON."""
    return await asyncio.to_thread(_overview)


@app.get("/", response_class=HTMLResponse)
async def page() -> str:
    """The MLOps page."""

    def render() -> str:
        from mlops_lib.overview import render_page
        from mlops_lib.settings import get_settings

        return render_page(_overview(), get_settings(), REPORT_HREF)

    return await asyncio.to_thread(render)


@app.get("/reports/{project}/{report_id}", response_class=HTMLResponse)
async def report(project: str, report_id: int) -> str:
    """One stored drift report page."""
    from mlops_lib.overview import drift_report_html

    try:
        return await asyncio.to_thread(drift_report_html, project, report_id)
    except KeyError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc


class MLOpsPlugin(AirflowPlugin):
    """Registers the MLOps page with the Airflow API server and UI."""

    name = "mlops"
    fastapi_apps = [{"app": app, "url_prefix": "/mlops", "name": "MLOps"}]
    external_views = [
        {
            "name": "MLOps",
            "href": "mlops/",
            "destination": "nav",
            "category": "browse",
            "url_route": "mlops",
        }
    ]
