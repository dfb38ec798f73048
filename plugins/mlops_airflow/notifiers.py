"""Failure notifications of the platform's DAGs.

``MLOpsFailureNotifier`` is every generated DAG's ``on_failure_callback`` (via default_args):
it always writes one line naming the DAG, run, task, try and error to the task's log, and,
when the Airflow connection ``mlops_alerts`` exists (an HTTP URL, e.g.
``AIRFLOW_CONN_MLOPS_ALERTS='https://hooks.example.com/T000/B000'``), posts the same facts as
JSON to it. A final failure (one Airflow will not retry) of a project's DAG is also recorded
in the lineage store (``mlops_lib.lineage.record_stage_failure``), where the MLOps page and
``mlops lineage`` show it. A webhook or a record that fails is logged and never masks the
task's own failure.

``alert`` sends the same kind of message from inside a task that goes on (e.g. a labelled
production batch rejected by the quality gate while continuous training carries on).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseNotifier

DEFAULT_CONN_ID = "mlops_alerts"
UP_FOR_RETRY = "up_for_retry"  # TaskInstanceState.UP_FOR_RETRY (a str enum)


def webhook_url(conn: Any) -> str:
    """The URL of an HTTP connection: its host when that holds a whole URL (JSON form,
    ``{"conn_type": "http", "host": "https://hooks.example.com/T000/B000"}``), else built from
    the URI form's parts (``http://host:port/path`` keeps the path in ``schema``)."""
    host = conn.host or ""
    if "://" in host:
        return host
    scheme = conn.conn_type if conn.conn_type in ("http", "https") else "https"
    port = f":{conn.port}" if conn.port else ""
    path = f"/{conn.schema}" if conn.schema else ""
    return f"{scheme}://{host}{port}{path}" if host else ""


class MLOpsFailureNotifier(BaseNotifier):
    """Log a task failure; post it to the ``mlops_alerts`` webhook when one is configured."""

    template_fields: Sequence[str] = ("project",)

    def __init__(
        self, *, project: str, conn_id: str = DEFAULT_CONN_ID, timeout: float = 10.0
    ) -> None:
        super().__init__()
        self.project = project
        self.conn_id = conn_id
        self.timeout = timeout

    def message(self, context: Any) -> dict[str, Any]:
        """What is reported: where it failed, the error and where to look."""
        ti = context.get("ti") or context.get("task_instance")
        dag_run = context.get("dag_run")
        from mlops_lib.lineage.failures import one_line_cause

        error = context.get("exception")
        return {
            "event": "task_failed",
            "project": self.project,
            "dag_id": getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", None),
            "run_id": getattr(ti, "run_id", None) or context.get("run_id"),
            "task_id": getattr(ti, "task_id", None),
            "try_number": getattr(ti, "try_number", None),
            # The same redacted line the lineage store keeps: no secret leaves in an alert.
            "error": one_line_cause(error),
            "log_url": getattr(ti, "log_url", None),
        }

    def notify(self, context: Any) -> None:
        msg = self.message(context)
        self.log.error(
            "MLOps alert: %s/%s task %s (try %s) failed: %s",
            msg["dag_id"],
            msg["run_id"],
            msg["task_id"],
            msg["try_number"],
            msg["error"],
        )
        self._post(msg)
        self._record(context, msg)

    def alert(self, context: Any, *, event: str, error: str, **facts: Any) -> None:
        """An alert from a task that carries on: logged and posted like a failure."""
        msg = self.message(context) | {"event": event, "error": error, **facts}
        self.log.error(
            "MLOps alert: %s/%s task %s (try %s): %s: %s",
            msg["dag_id"],
            msg["run_id"],
            msg["task_id"],
            msg["try_number"],
            event,
            error,
        )
        self._post(msg)

    def _record(self, context: Any, msg: dict[str, Any]) -> None:
        """Record a final failure in the lineage store; one that will be retried is not."""
        ti = context.get("ti") or context.get("task_instance")
        if getattr(ti, "state", None) == UP_FOR_RETRY:
            return
        try:
            from mlops_lib.lineage import record_stage_failure

            record_stage_failure(
                self.project,
                dag_id=msg["dag_id"] or "",
                dag_run_id=msg["run_id"] or "",
                task_id=msg["task_id"] or "",
                error=context.get("exception"),
                try_number=msg["try_number"],
                failed_at=getattr(ti, "end_date", None),
            )
        except Exception as exc:  # the task's failure matters, not its record
            first = (str(exc).strip().splitlines() or [""])[0]
            self.log.warning(
                "MLOps failure not recorded in the lineage store: %s: %s", type(exc).__name__, first
            )

    def _post(self, msg: dict[str, Any]) -> None:
        url = self._url()
        if not url:
            return
        body = json.dumps(msg, default=str).encode()
        req = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                self.log.info("MLOps alert posted to connection %s: %s", self.conn_id, resp.status)
        except OSError as exc:
            self.log.warning("MLOps alert webhook (connection %s) failed: %s", self.conn_id, exc)

    def _url(self) -> str | None:
        from airflow.sdk import BaseHook

        try:
            conn = BaseHook.get_connection(self.conn_id)
        except Exception:  # no such connection: alerts are logged only
            return None
        return webhook_url(conn) or None
