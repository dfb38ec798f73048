"""The failure notifier: a log line always, a JSON post when the alerts connection exists, and
a final failure's record in the lineage store."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlops_airflow.notifiers import MLOpsFailureNotifier, webhook_url

import mlops_lib.lineage
from mlops_lib.lineage import failures, lineage_store
from mlops_lib.settings import Settings, load_settings


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.received.append({"path": self.path, "body": json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(autouse=True)
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Failures go to a lineage store of the test's own."""
    settings = load_settings(stack_dir=tmp_path, lineage_db_url=f"sqlite:///{tmp_path}/l.db")
    monkeypatch.setattr(failures, "get_settings", lambda: settings)
    return settings


@pytest.fixture
def receiver():
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.received = []
    yield server.server_address[1], _Receiver.received
    server.shutdown()


def _out(capfd) -> str:
    """The notifier logs through Airflow's structured logging, to the process output."""
    out, err = capfd.readouterr()
    return out + err


def _context(error: Exception, state: str = "failed") -> dict:
    ti = SimpleNamespace(
        dag_id="churn__ingest",
        run_id="manual__1",
        task_id="publish",
        try_number=1,
        log_url="http://airflow/log",
        state=state,
        end_date=datetime(2026, 11, 27, 10, 0, tzinfo=UTC),
    )
    return {"ti": ti, "exception": error}


def test_failure_is_posted_to_the_alerts_connection(receiver, monkeypatch, capfd) -> None:
    port, received = receiver
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_ALERTS", f"http://127.0.0.1:{port}/hooks/ops")
    error = ValueError("batch for project 'churn' rejected: 2 blocking violations\n  - ...")
    MLOpsFailureNotifier(project="churn").notify(_context(error))
    assert received and received[0]["path"] == "/hooks/ops"
    body = received[0]["body"]
    assert body["dag_id"] == "churn__ingest" and body["task_id"] == "publish"
    assert body["error"] == "ValueError: batch for project 'churn' rejected: 2 blocking violations"
    assert "MLOps alert: churn__ingest/manual__1 task publish (try 1) failed" in _out(capfd)


def test_an_alert_from_a_task_that_goes_on_is_posted_like_a_failure(
    receiver, monkeypatch, capfd
) -> None:
    port, received = receiver
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_ALERTS", f"http://127.0.0.1:{port}/hooks/ops")
    uri = "lakefs://churn/ingest-x/datasets/churn/production/_validation.json"
    MLOpsFailureNotifier(project="churn").alert(
        {"ti": _context(ValueError())["ti"]},
        event="production_batch_rejected",
        error=f"labelled production batch rejected: {uri}",
        report=uri,
    )
    body = received[0]["body"]
    assert body["event"] == "production_batch_rejected" and body["report"] == uri
    assert body["project"] == "churn" and body["task_id"] == "publish"
    assert f"production_batch_rejected: labelled production batch rejected: {uri}" in _out(capfd)


def test_without_a_connection_it_only_logs(monkeypatch, capfd) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_MLOPS_ALERTS", raising=False)
    MLOpsFailureNotifier(project="churn").notify(_context(RuntimeError("lakeFS down")))
    assert "failed: RuntimeError: lakeFS down" in _out(capfd)


def test_a_broken_webhook_is_logged_not_raised(monkeypatch, capfd) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_ALERTS", "http://127.0.0.1:9/nothing-listens")
    MLOpsFailureNotifier(project="churn", timeout=2).notify(_context(RuntimeError("x")))
    assert "webhook (connection mlops_alerts) failed" in _out(capfd)


def test_webhook_url_forms() -> None:
    conn = SimpleNamespace(conn_type="http", host="https://h.example/a/b", port=None, schema="")
    assert webhook_url(conn) == "https://h.example/a/b"
    conn = SimpleNamespace(conn_type="http", host="10.0.0.1", port=8080, schema="alerts")
    assert webhook_url(conn) == "http://10.0.0.1:8080/alerts"
    assert webhook_url(SimpleNamespace(conn_type="http", host="", port=None, schema="")) == ""


def test_a_final_failure_is_recorded_in_the_lineage_store(settings: Settings) -> None:
    error = ValueError("batch for project 'churn' rejected: 2 blocking violations\n  - ...")
    MLOpsFailureNotifier(project="churn").notify(_context(error))
    last = lineage_store(settings).last_failure("churn")
    assert last is not None and last["resolved"] is False
    assert (last["stage"], last["dag_id"], last["dag_run_id"]) == (
        "ingest",
        "churn__ingest",
        "manual__1",
    )
    assert (last["task_id"], last["try_number"]) == ("publish", 1)
    assert last["cause"] == "ValueError: batch for project 'churn' rejected: 2 blocking violations"
    assert last["failed_at"].startswith("2026-11-27T10:00:00")


def test_a_failure_that_will_be_retried_is_not_recorded(settings: Settings) -> None:
    MLOpsFailureNotifier(project="churn").notify(_context(RuntimeError("x"), "up_for_retry"))
    assert lineage_store(settings).failures("churn") == []


def test_an_alert_from_a_task_that_goes_on_is_not_a_failure(settings: Settings) -> None:
    MLOpsFailureNotifier(project="churn").alert(
        _context(RuntimeError("x")), event="production_batch_rejected", error="rejected"
    )
    assert lineage_store(settings).failures("churn") == []


def test_a_failure_that_cannot_be_recorded_is_logged_and_still_posted(
    receiver, monkeypatch, capfd
) -> None:
    port, received = receiver
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_ALERTS", f"http://127.0.0.1:{port}/hooks/ops")

    def broken(*_args, **_kwargs):
        raise OSError("database is locked")

    monkeypatch.setattr(mlops_lib.lineage, "record_stage_failure", broken)
    MLOpsFailureNotifier(project="churn").notify(_context(RuntimeError("lakeFS down")))
    assert received and received[0]["body"]["error"] == "RuntimeError: lakeFS down"
    assert "not recorded in the lineage store: OSError: database is locked" in _out(capfd)
