"""Task log tails from Airflow's structured log lines (no server: the request is stubbed)."""

from __future__ import annotations

from types import SimpleNamespace

from mlops_lib.airflow_api import AirflowClient


def test_log_tail_keeps_events_details_and_errors(monkeypatch) -> None:
    content = [
        {"timestamp": "t", "level": "info", "event": "::group::Pre Execute", "ti_id": "x"},
        {"event": "Skipping task.", "reason": "same episode", "logger": "task", "lineno": 1},
        {
            "event": "Task failed",
            "error_detail": [{"exc_type": "DataQualityError", "exc_value": "2 violations"}],
        },
        "a plain line",
    ]
    client = AirflowClient("http://airflow", "admin", "pw")
    monkeypatch.setattr(
        client, "request", lambda *a, **k: SimpleNamespace(json=lambda: {"content": content})
    )
    tail = client.task_log_tail("d", "r", "t", 1)
    assert tail.splitlines() == [
        "::group::Pre Execute",
        "Skipping task. reason=same episode",
        "Task failed",
        "DataQualityError: 2 violations",
        "a plain line",
    ]
