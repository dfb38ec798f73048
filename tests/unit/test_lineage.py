"""Metadata store on SQLite: Alembic migration, idempotent records, the chain."""

from pathlib import Path

from sqlalchemy import create_engine, inspect

from mlops_lib.lineage.store import LineageStore, migrate


def store(tmp_path: Path) -> LineageStore:
    url = f"sqlite:///{tmp_path / 'lineage.db'}"
    migrate(url)
    return LineageStore(create_engine(url))


def test_migration_creates_the_tables_and_is_repeatable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lineage.db'}"
    migrate(url)
    migrate(url)
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"dataset_versions", "training_runs", "model_versions", "gate_decisions"} <= tables
    assert "deployments" in tables
    assert "alembic_version" in tables


def test_chain_from_data_commit_to_gate(tmp_path: Path) -> None:
    s = store(tmp_path)
    dataset = {
        "project": "p",
        "commit_id": "c1",
        "rows": 10,
        "schema_hash": "h",
        "rule_summary": "passed",
        "source": "x.csv",
        "partition": "d",
        "dag_run_id": "r",
    }
    first = s.record_dataset(**dataset)
    again = s.record_dataset(**(dataset | {"rows": 99}))
    assert again["id"] == first["id"] and again["rows"] == 10
    s.record_training(
        project="p",
        mlflow_run_id="m1",
        data_commit="c1",
        spec_hash="s",
        code_version="abc",
        dag_id="p__train",
        dag_run_id="run",
        best_family="linear",
        cv_score=0.8,
        trials=3,
        seconds=1.0,
        trigger="manual",
    )
    s.record_model_version(
        project="p",
        version=1,
        model_uri="models:/p/1",
        mlflow_run_id="m1",
        data_commit="c1",
        holdout_metrics={"roc_auc": 0.8},
    )
    s.record_decision(
        project="p",
        version=1,
        decision="promote",
        reason="no current champion",
        champion_version=None,
        challenger_metrics={"roc_auc": 0.8},
        champion_metrics={},
    )
    chain = s.chain("p")
    assert len(chain) == 1
    link = chain[0]
    assert link["dataset"]["rows"] == 10
    assert link["training"]["best_family"] == "linear"
    assert link["model_version"]["holdout_metrics"] == {"roc_auc": 0.8}
    assert [d["decision"] for d in link["decisions"]] == ["promote"]
    assert s.chain("p", version=2) == []


def test_deployments_record_state_changes_newest_first(tmp_path: Path) -> None:
    s = store(tmp_path)
    base = {
        "project": "p",
        "bento_tag": "mlops-p:a",
        "model_tag": "p:a",
        "model_version": 1,
        "model_uri": "models:/p/1",
        "url": "",
        "state": "built",
        "reason": "",
        "dag_run_id": "r1",
    }
    first = s.record_deployment(**base)
    second = s.record_deployment(**(base | {"bento_tag": "mlops-p:b", "model_version": 2}))
    s.update_deployment(first["id"], state="active", port=4000, url="http://127.0.0.1:4000")
    failed = s.update_deployment(second["id"], state="failed", reason="smoke test: 500")
    assert failed["reason"] == "smoke test: 500" and failed["updated_at"] >= failed["created_at"]
    assert [d["id"] for d in s.deployments("p")] == [second["id"], first["id"]]
    assert [d["port"] for d in s.deployments("p", "active")] == [4000]
    assert s.deployments("other") == [] and s.deployment(999) is None
