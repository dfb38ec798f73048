"""The MLOps page's HTML from an overview, and its last-failure data (no services)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlops_lib.overview import commit_link, render_page, version_link
from mlops_lib.settings import load_settings


def test_page_links_versions_commits_reports_and_escapes() -> None:
    settings = load_settings()
    project = {
        "project": "churn",
        "links": {
            "mlflow_model": "http://m/#/models/churn",
            "lakefs_repo": "http://l/repositories/churn/objects?ref=main",
            "airflow_dags": "http://a/dags?tags=project%3Achurn",
            "service": "http://s/churn/docs",
        },
        "models": {
            "champion": {
                "version": 3,
                "data_commit": "abcdef1234567890",
                "gate": "promote",
                "gate_reason": "",
                "drift_report_id": "7",
            }
        },
        "lineage": [
            {
                "version": 3,
                "data_commit": "abcdef1234567890",
                "rows": 60000,
                "training_run": "r1",
                "family": "hist_gradient_boosting",
                "holdout": {"roc_auc": 0.81234},
                "decisions": ["promote: <better>"],
            }
        ],
        "drift_reports": [
            {
                "id": 7,
                "model_version": 2,
                "rows": 10000,
                "fired": True,
                "drifted_features": ["tenure_months"],
                "live_metric": 0.61,
                "handled_by": "asset_triggered__x",
                "outcome": "skipped: nothing new to learn from: <no new labels>",
                "created_at": "2026-11-27T10:00:00",
            }
        ],
        "deployments": [],
    }
    html = render_page([project], settings, "reports/{project}/{id}")
    assert 'id="project-churn"' in html
    assert f'href="{version_link(settings, "churn", 3)}"' in html and ">v3<" in html
    assert commit_link(settings, "churn", "abcdef1234567890") in html and ">abcdef123456<" in html
    assert 'src="reports/churn/7"' in html and "FIRED" in html and "0.6100" in html
    assert "drift report 7" in html
    assert "&lt;better&gt;" in html and "<better>" not in html
    assert "roc_auc 0.812" in html
    # What the retraining did with the report, escaped.
    assert "skipped: nothing new to learn from: &lt;no new labels&gt;" in html


def _failure(**more: object) -> dict:
    return {
        "id": 4,
        "project": "churn",
        "stage": "train",
        "dag_id": "churn__train",
        "dag_run_id": "manual__2026-11-27T10:00:00+00:00",
        "task_id": "train",
        "try_number": 3,
        "cause": "ValueError: column <churned> has a single class & no <script>",
        "failed_at": "2026-11-27T10:05:00",
        "resolved": False,
        "dag_run_url": "http://a/dags/churn__train/runs/manual__2026-11-27T10%3A00%3A00%2B00%3A00",
    } | more


def _project(**more: object) -> dict:
    links = {"mlflow_model": "m", "lakefs_repo": "l", "airflow_dags": "a", "service": "s"}
    empty = {"models": {}, "lineage": [], "drift_reports": [], "deployments": []}
    return {"project": "churn", "links": links, **empty, **more}


def test_page_shows_the_last_failure_in_red_with_its_dag_run_linked_and_escaped() -> None:
    html = render_page([_project(last_failure=_failure())], load_settings(), "r/{project}/{id}")
    assert '<p class="failure open">last failure: train (' in html
    assert (
        'href="http://a/dags/churn__train/runs/manual__2026-11-27T10%3A00%3A00%2B00%3A00"' in html
    )
    assert ">churn__train run manual__2026-11-27T10:00:00+00:00</a>, task train)" in html
    assert "ValueError: column &lt;churned&gt; has a single class &amp; no &lt;script&gt;" in html
    assert "<script>" not in html and "2026-11-27T10:05:00" in html and "(resolved:" not in html


def test_page_marks_a_resolved_failure_and_shows_nothing_without_one() -> None:
    settings = load_settings()
    html = render_page([_project(last_failure=_failure(resolved=True))], settings, "r/{id}")
    assert (
        '<p class="failure resolved">' in html and "(resolved: the stage succeeded since)" in html
    )
    for project in (_project(last_failure=None), _project()):
        assert 'class="failure' not in render_page([project], settings, "r/{id}")


def test_overview_has_the_last_failure_with_its_resolved_flag_and_run_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_lib import overview as ov
    from mlops_lib.lineage import lineage_store

    settings = load_settings(
        stack_dir=tmp_path,
        lineage_db_url=f"sqlite:///{tmp_path}/l.db",
        airflow_url="http://airflow:8080",
    )
    monkeypatch.setattr(ov, "_alias_versions", lambda *_a: {})
    store = lineage_store(settings)
    assert ov.project_overview("churn", settings)["last_failure"] is None
    store.record_failure(
        project="churn",
        dag_id="churn__deploy",
        stage="deploy",
        dag_run_id="asset_triggered__2026-11-27T10:00:00+00:00",
        task_id="smoke_test",
        cause="DeploymentError: smoke test: 500",
        failed_at=datetime.now(UTC) - timedelta(minutes=1),
    )
    failure = ov.project_overview("churn", settings)["last_failure"]
    assert failure["stage"] == "deploy" and failure["task_id"] == "smoke_test"
    assert failure["cause"] == "DeploymentError: smoke test: 500" and failure["resolved"] is False
    assert failure["dag_run_url"] == (
        "http://airflow:8080/dags/churn__deploy/runs/"
        "asset_triggered__2026-11-27T10%3A00%3A00%2B00%3A00"
    )
    store.record_deployment(
        project="churn", bento_tag="b:2", model_version=2, activated_at=datetime.now(UTC)
    )
    assert ov.project_overview("churn", settings)["last_failure"]["resolved"] is True
