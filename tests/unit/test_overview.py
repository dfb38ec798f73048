"""The MLOps page's HTML from an overview, and its last-failure and feature-view data (no
services)."""

from __future__ import annotations

import json
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


# Feature views --------------------------------------------------------------------------
def _published(tmp_path: Path, **more: object) -> dict:
    """What the features DAG writes to ``current.json`` after publishing a commit."""
    return {
        "commit_id": "feedbeef12345678",
        "path": str(tmp_path / "features/churn/commits/feedbeef12345678"),
        "registry_hash": "0123456789abcdef",
        "feature_views": ["customer_activity"],
        "materialized_from": "1970-01-02T00:00:00+00:00",
        "materialized_to": (datetime.now(UTC) - timedelta(hours=3, minutes=5)).isoformat(),
        "server_url": "http://127.0.0.1:6566",
    } | more


def _overview_settings(tmp_path: Path):
    return load_settings(
        stack_dir=tmp_path,
        lineage_db_url=f"sqlite:///{tmp_path}/l.db",
        airflow_url="http://airflow:8080",
        lakefs_url="http://lakefs:8000",
    )


def test_page_lists_published_views_with_features_commit_freshness_and_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_lib import overview as ov
    from mlops_lib.feature_store import paths

    settings = _overview_settings(tmp_path)
    monkeypatch.setattr(ov, "_alias_versions", lambda *_a: {})
    monkeypatch.setattr(ov.feature_server, "healthy", lambda _s, project: project == "churn")
    current = paths.current_file(settings, "churn")
    current.parent.mkdir(parents=True)
    current.write_text(json.dumps(_published(tmp_path)))

    features = ov.project_overview("churn", settings)["features"]
    assert features["dag_id"] == "churn__features"
    (view,) = features["views"]
    assert view["name"] == "customer_activity" and view["ttl_days"] == 90
    assert view["published"] is True
    assert {"name": "last_payment", "aggregate": "last", "column": "amount", "days": None,
            "where": {"kind": "payment"}} in view["features"]  # fmt: skip
    pub = features["published"]
    assert pub["commit_id"] == "feedbeef12345678" and pub["server_healthy"] is True
    assert 3 * 3600 < pub["age_seconds"] < 4 * 3600
    json.dumps(features)  # JSON-ready, as /api/projects returns it

    html = render_page([_project(features=features)], settings, "r/{project}/{id}")
    assert "<h3>Feature views</h3>" in html
    link = commit_link(settings, "churn", "feedbeef12345678")
    assert f'<a href="{link}" target="_blank" rel="noopener">feedbeef1234</a>' in html
    assert f"3 h ago ({pub['materialized_to'][:19]})" in html
    assert "<td>customer_activity</td>" in html and "<td>90 days</td>" in html
    assert "tickets_30d: count over 30 days where kind=ticket<br>" in html
    assert "payment_mean_90d: mean of amount over 90 days where kind=payment" in html
    assert "last_payment: last of amount where kind=payment" in html
    assert "<td>0123456789abcdef</td>" in html
    assert '<p class="server healthy">feature server: healthy · ' in html
    assert 'href="http://127.0.0.1:6566"' in html and "not computed yet" not in html

    monkeypatch.setattr(ov.feature_server, "healthy", lambda *_a: False)
    down = ov.project_overview("churn", settings)["features"]
    html = render_page([_project(features=down)], settings, "r/{project}/{id}")
    assert '<p class="server down">feature server: down · ' in html


def test_page_says_views_are_not_computed_yet_and_which_dag_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_lib import overview as ov

    settings = _overview_settings(tmp_path)
    monkeypatch.setattr(ov, "_alias_versions", lambda *_a: {})
    features = ov.project_overview("churn", settings)["features"]
    assert features["published"] is None
    assert [v["published"] for v in features["views"]] == [False]

    html = render_page([_project(features=features)], settings, "r/{project}/{id}")
    assert "<td>customer_activity</td>" in html and "tickets_90d: count over 90 days" in html
    assert "<td colspan=3>not computed yet</td>" in html
    assert (
        "<p>Feature views not computed yet: run <a "
        'href="http://airflow:8080/dags/churn__features" target="_blank" rel="noopener">'
        "churn__features</a>.</p>"
    ) in html
    assert "feature server" not in html


def test_a_project_without_features_shows_nothing_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_lib import overview as ov
    from mlops_lib.spec import project_spec

    settings = _overview_settings(tmp_path)
    monkeypatch.setattr(ov, "_alias_versions", lambda *_a: {})
    spec = project_spec("churn", settings).model_copy(update={"feature_store": None})
    assert ov.project_overview("churn", settings, spec)["features"] is None

    before = render_page([_project()], settings, "r/{project}/{id}")
    assert render_page([_project(features=None)], settings, "r/{project}/{id}") == before
    assert "Feature views" not in before and "feature server" not in before


def test_the_page_stays_up_when_the_feature_store_cannot_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_lib import overview as ov

    settings = _overview_settings(tmp_path)
    monkeypatch.setattr(ov, "_alias_versions", lambda *_a: {})

    def broken(*_a: object) -> None:
        raise PermissionError("current.json: <denied>")

    monkeypatch.setattr(ov.feature_store, "published", broken)
    p = ov.project_overview("churn", settings)
    assert p["features"] == {"error": "PermissionError: current.json: <denied>"}
    html = render_page([p], settings, "r/{project}/{id}")
    assert (
        '<p class="error">feature store not readable: PermissionError: current.json: '
        "&lt;denied&gt;</p>"
    ) in html
    assert "<h3>Deployments</h3>" in html
