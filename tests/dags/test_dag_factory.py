"""The DAG factory: DAG ids, wiring, retries from the spec, broken specs isolated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "tasks": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},
        "retries": dag.default_args.get("retries"),
        "backoff": dag.default_args.get("retry_exponential_backoff"),
        "owner": dag.default_args.get("owner"),
        "tags": sorted(dag.tags),
        "doc": dag.doc_md or "",
        "outlets": {t.task_id: [getattr(o, "name", None) for o in t.outlets] for t in dag.tasks},
        "schedule": sorted(
            getattr(a, "name", "")
            for a in getattr(getattr(dag.timetable, "asset_condition", None), "objects", ())
        ),
    }
print(json.dumps(out))
"""


def parse(tmp_path: Path, projects: Path) -> dict:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "MLOPS_PROJECTS_DIR": str(projects),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "dags" / "mlops_projects.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The DAGs of the repo's own specs, parsed once for the tests that read them."""
    return parse(tmp_path_factory.mktemp("demo"), REPO / "projects")


def test_ingest_dag_of_the_demo_project(demo: dict) -> None:
    result = demo
    assert result["errors"] == {}
    dag = result["dags"]["churn__ingest"]
    assert dag["tasks"] == {
        "open_branch": ["validate_and_commit"],
        "validate_and_commit": ["publish"],
        "publish": [],
    }
    assert dag["outlets"]["publish"] == ["churn_dataset"]
    assert dag["retries"] == 2 and dag["backoff"] is True and dag["owner"] == "ml-platform"
    assert {"mlops", "ingest", "project:churn", "demo"} <= set(dag["tags"])
    assert "When it fails" in dag["doc"]


def test_broken_spec_is_isolated_and_explained(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    projects.mkdir()
    good = yaml.safe_load((REPO / "projects" / "churn.yaml").read_text())
    (projects / "churn.yaml").write_text(yaml.safe_dump(good))
    bad = dict(good, name="broken", surprise=True)
    (projects / "broken.yaml").write_text(yaml.safe_dump(bad))
    result = parse(tmp_path, projects)
    assert result["errors"] == {}
    assert "churn__ingest" in result["dags"]
    placeholder = result["dags"]["broken__invalid_spec"]
    assert "surprise: unknown key" in placeholder["doc"]
    assert "broken__ingest" not in result["dags"]


def test_deploy_monitor_and_continuous_training_dags_are_wired(demo: dict) -> None:
    result = demo
    assert result["errors"] == {}
    dags = result["dags"]
    assert dags["churn__deploy"]["tasks"] == {
        "package": ["start"],
        "start": ["smoke_test"],
        "smoke_test": ["switch"],
        "switch": [],
    }
    assert dags["churn__monitor"]["outlets"]["monitor"] == ["churn_drift"]
    ct = dags["churn__continuous_training"]["tasks"]
    assert ct["wait_for_drift"] == ["claim"]
    assert ct["claim"] == ["plan_search", "resolve_data"]
    assert ct["resolve_data"] == ["plan_search"]
    assert ct["plan_search"] == ["search", "train"] and ct["search"] == ["train"]
    assert ct["train"] == ["gate"] and ct["gate"] == ["promote"]
    assert dags["churn__continuous_training"]["outlets"]["promote"] == ["churn_champion"]
    assert dags["churn__ingest_labels"]["tasks"] == {"ingest_labels": []}
    for dag_id in (
        "churn__deploy",
        "churn__monitor",
        "churn__ingest_labels",
        "churn__continuous_training",
    ):
        assert "When it fails" in dags[dag_id]["doc"], dag_id


def test_features_run_on_each_dataset_and_training_on_the_features(demo: dict) -> None:
    result = demo
    assert result["errors"] == {}
    dags = result["dags"]
    features = dags["churn__features"]
    assert features["tasks"] == {"build_views": ["publish_views"], "publish_views": []}
    assert features["outlets"]["publish_views"] == ["churn_features"]
    assert features["schedule"] == ["churn_dataset"]
    assert dags["churn__train"]["schedule"] == ["churn_features"]
    assert "When it fails" in features["doc"]


def test_a_project_without_feature_views_trains_on_the_dataset(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    projects.mkdir()
    spec = yaml.safe_load((REPO / "projects" / "churn.yaml").read_text())
    spec.pop("features")
    (projects / "churn.yaml").write_text(yaml.safe_dump(spec))
    dags = parse(tmp_path, projects)["dags"]
    assert "churn__features" not in dags
    assert dags["churn__train"]["schedule"] == ["churn_dataset"]
