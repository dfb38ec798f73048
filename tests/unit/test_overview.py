"""The MLOps page's HTML from an overview (no services)."""

from __future__ import annotations

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
