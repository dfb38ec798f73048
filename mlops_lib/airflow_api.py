"""Client of the Airflow 3 REST API (v2), used by the CLI to drive the scheduler.

Speaks HTTP only, so mlops_lib stays free of Airflow imports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from mlops_lib.settings import Settings

# How often a run or an asset-triggered run is polled for (each wait ends that much late
# on average: half of it).
POLL_SECONDS = 1.0
TERMINAL_STATES = {"success", "failed"}


# Fields of a structured task-log line that say where it was logged, not what happened.
_LOG_FIELDS = {
    "timestamp",
    "level",
    "event",
    "logger",
    "filename",
    "lineno",
    "ti_id",
    "task_id",
    "run_id",
    "dag_id",
    "map_index",
    "try_number",
    "error_detail",
    "chan",
    "bundle_name",
    "loc",
}


# Pauses before trying an idempotent call again when the metadata database is busy.
RETRY_PAUSES = (0.5, 1.0, 2.0, 4.0)
IDEMPOTENT = frozenset({"GET", "PATCH"})


class AirflowApiError(RuntimeError):
    """The Airflow API refused a request; the message names the resource."""


@dataclass
class AirflowClient:
    """Small typed wrapper over /api/v2 with a JWT from the simple auth manager."""

    base_url: str
    username: str
    password: str
    timeout: float = 30.0
    _token: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AirflowClient:
        return cls(
            base_url=settings.airflow_base_url,
            username=settings.airflow_user,
            password=settings.secret("airflow_password"),
        )

    def _auth(self) -> dict[str, str]:
        if self._token is None:
            resp = httpx.post(
                f"{self.base_url}/auth/token",
                json={"username": self.username, "password": self.password},
                timeout=self.timeout,
            )
            if not resp.is_success:
                raise AirflowApiError(
                    f"Airflow login as {self.username!r} at {self.base_url} failed: "
                    f"HTTP {resp.status_code} {resp.text[:200]}"
                )
            self._token = resp.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call; raises AirflowApiError naming the path on non-2xx. An idempotent
        call (GET, PATCH) that meets a busy metadata database (HTTP 500 "Database error",
        e.g. SQLite locked by the scheduler) is tried again a few times first."""
        for pause in (*RETRY_PAUSES, None):
            resp = httpx.request(
                method,
                f"{self.base_url}/api/v2{path}",
                headers=self._auth(),
                timeout=self.timeout,
                **kwargs,
            )
            busy = resp.status_code == 500 and "Database error" in resp.text
            if not (busy and method in IDEMPOTENT and pause is not None):
                break
            time.sleep(pause)
        if not resp.is_success:
            raise AirflowApiError(
                f"{method} /api/v2{path}: HTTP {resp.status_code} {resp.text[:300]}"
            )
        return resp

    def list_dags(self) -> list[dict]:
        return self.request("GET", "/dags", params={"limit": 1000}).json()["dags"]

    def import_errors(self) -> list[dict]:
        return self.request("GET", "/importErrors").json()["import_errors"]

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> dict:
        """Wait until the DAG processor has parsed and serialized ``dag_id``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.request("GET", f"/dags/{dag_id}").json()
            except AirflowApiError:
                if time.monotonic() > deadline:
                    errors = [e for e in self.import_errors() if dag_id.split("__")[0] in str(e)]
                    raise AirflowApiError(
                        f"DAG {dag_id} did not appear within {timeout:.0f}s"
                        + (f"; import errors: {errors}" if errors else "")
                    ) from None
                time.sleep(POLL_SECONDS)

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        """Trigger a run now; returns its run id."""
        body = {"logical_date": None, "conf": conf or {}}
        return self.request("POST", f"/dags/{dag_id}/dagRuns", json=body).json()["dag_run_id"]

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        resp = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return resp.json()["task_instances"]

    def task_log_tail(
        self, dag_id: str, run_id: str, task_id: str, try_number: int, lines: int = 40
    ) -> str:
        """Last lines of one task try's log (the events the task logged)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        data = self.request("GET", path, params={"full_content": "true"}).json()
        content = data.get("content", "")
        if isinstance(content, list):
            events = []
            for item in content:
                if isinstance(item, dict):
                    text = str(item.get("event", ""))
                    extra = {k: v for k, v in item.items() if k not in _LOG_FIELDS}
                    if extra:  # structured details, e.g. the reason of a skip
                        text += " " + " ".join(f"{k}={v}" for k, v in extra.items())
                    detail = item.get("error_detail")
                    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
                        text += f"\n{detail[0].get('exc_type')}: {detail[0].get('exc_value')}"
                    events.append(text)
                else:
                    events.append(str(item))
            content = "\n".join(events)
        return "\n".join(str(content).splitlines()[-lines:])

    def wait_for_asset_run(self, dag_id: str, *, since: str = "", timeout: float = 300.0) -> str:
        """Run id of the first asset-triggered run of a DAG queued after ``since`` (ISO time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.request(
                "GET",
                f"/dags/{dag_id}/dagRuns",
                params={"run_type": "asset_triggered", "limit": 100, "order_by": "-run_after"},
            ).json()["dag_runs"]
            fresh = [r for r in runs if (r.get("queued_at") or "") >= since]
            if fresh:
                return min(fresh, key=lambda r: r.get("queued_at") or "")["dag_run_id"]
            time.sleep(POLL_SECONDS)
        raise AirflowApiError(f"no asset-triggered run of {dag_id} within {timeout:.0f}s")

    def emit_asset_event(self, asset_name: str, extra: dict) -> dict:
        """Create an asset event (as a task would) for the asset with this name."""
        assets = self.request("GET", "/assets", params={"name_pattern": asset_name}).json()
        match = [a for a in assets.get("assets", []) if a.get("name") == asset_name]
        if not match:
            raise AirflowApiError(f"asset {asset_name!r} is not known to Airflow")
        body = {"asset_id": match[0]["id"], "extra": extra}
        return self.request("POST", "/assets/events", json=body).json()

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        """State of each task of a run ('none' before it is scheduled)."""
        return {
            ti["task_id"]: ti.get("state") or "none" for ti in self.task_instances(dag_id, run_id)
        }

    def wait_until(
        self,
        dag_id: str,
        run_id: str,
        done: Callable[[dict[str, str]], bool],
        *,
        timeout: float = 300.0,
        poll: float = 0.5,
    ) -> dict[str, str]:
        """Poll a run's task states until ``done(states)``; returns the last states seen."""
        deadline = time.monotonic() + timeout
        states = self.task_states(dag_id, run_id)
        while not done(states) and time.monotonic() < deadline:
            time.sleep(poll)
            states = self.task_states(dag_id, run_id)
        return states

    def follow(
        self,
        dag_id: str,
        run_id: str,
        *,
        timeout: float = 900.0,
        on_change: Callable[[dict[str, str]], None] | None = None,
    ) -> str:
        """Poll a run to its end; report task state changes; returns the final state."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            tis = self.task_states(dag_id, run_id)
            if tis != seen:
                seen = tis
                if on_change:
                    on_change(tis)
            state = self.dag_run(dag_id, run_id)["state"]
            if state in TERMINAL_STATES:
                return state
            time.sleep(POLL_SECONDS)
        raise AirflowApiError(f"run {run_id} of {dag_id} did not finish within {timeout:.0f}s")

    def prepare(self, dag_id: str, timeout: float = 120.0) -> None:
        """Wait until the DAG is parsed, then unpause it."""
        self.wait_for_dag(dag_id, timeout=timeout)
        self.unpause(dag_id)

    def run(
        self,
        dag_id: str,
        conf: dict | None = None,
        *,
        timeout: float = 900.0,
        on_trigger: Callable[[str], None] | None = None,
        on_change: Callable[[dict[str, str]], None] | None = None,
    ) -> tuple[str, str]:
        """Trigger a run and follow it to the end; returns (run id, final state)."""
        run_id = self.trigger(dag_id, conf)
        if on_trigger:
            on_trigger(run_id)
        return run_id, self.follow(dag_id, run_id, timeout=timeout, on_change=on_change)


def describe_states(states: dict[str, str]) -> str:
    """One line of task states, e.g. ``  open_branch=success  publish=running``."""
    return "  " + "  ".join(f"{task}={state}" for task, state in states.items())
