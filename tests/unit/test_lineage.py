"""Metadata store on SQLite: Alembic migration, idempotent records, the chain, failures."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect

from mlops_lib.lineage import (
    DatasetRow,
    DecisionRow,
    DeploymentRow,
    DriftReportRow,
    FailureRow,
    ModelVersionRow,
    TrainingRow,
)
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


# The fewest arguments each record_* method accepts.
REQUIRED: dict[str, dict[str, Any]] = {
    "record_dataset": {"project": "p", "commit_id": "c1", "rows": 1, "schema_hash": "h"},
    "record_training": {
        "project": "p",
        "mlflow_run_id": "m1",
        "data_commit": "c1",
        "spec_hash": "s",
        "code_version": "abc",
    },
    "record_model_version": {
        "project": "p",
        "version": 1,
        "model_uri": "models:/p/1",
        "mlflow_run_id": "m1",
        "data_commit": "c1",
    },
    "record_decision": {"project": "p", "version": 1, "decision": "promote", "reason": "r"},
    "record_deployment": {"project": "p", "bento_tag": "mlops-p:a", "model_version": 1},
    "record_drift_report": {"project": "p", "model_version": 1},
    "record_failure": {"project": "p", "dag_id": "p__train", "stage": "train"},
}
ROW_TYPES: dict[str, Any] = {
    "record_dataset": DatasetRow,
    "record_training": TrainingRow,
    "record_model_version": ModelVersionRow,
    "record_decision": DecisionRow,
    "record_deployment": DeploymentRow,
    "record_drift_report": DriftReportRow,
    "record_failure": FailureRow,
}


@pytest.mark.parametrize("method", sorted(REQUIRED))
def test_record_with_an_unknown_keyword_raises_type_error(tmp_path: Path, method: str) -> None:
    s = store(tmp_path)
    with pytest.raises(TypeError, match="no_such_column"):
        getattr(s, method)(**REQUIRED[method], no_such_column=1)
    assert s.datasets("p") == [] and s.deployments() == [] and s.drift_reports("p") == []


@pytest.mark.parametrize("method", sorted(REQUIRED))
def test_recorded_rows_have_exactly_the_keys_of_their_row_type(tmp_path: Path, method: str) -> None:
    row = getattr(store(tmp_path), method)(**REQUIRED[method])
    assert set(row) == set(ROW_TYPES[method].__required_keys__)


def test_omitted_columns_take_the_table_defaults(tmp_path: Path) -> None:
    s = store(tmp_path)
    report = s.record_drift_report(project="p", model_version=1)
    assert report["windows"] == [] and report["scores"] == {} and report["fired"] is False
    assert report["live_metric"] is None and report["handled_at"] is None
    deployment = s.record_deployment(project="p", bento_tag="mlops-p:a", model_version=1)
    assert deployment["state"] == "starting" and deployment["port"] is None
    assert isinstance(deployment["created_at"], str)


def test_update_changes_only_the_given_fields(tmp_path: Path) -> None:
    s = store(tmp_path)
    dep = s.record_deployment(
        project="p", bento_tag="mlops-p:a", model_version=1, port=4000, reason="built"
    )
    updated = s.update_deployment(dep["id"], state="active")
    assert updated["state"] == "active"
    assert (updated["port"], updated["reason"]) == (4000, "built")
    report = s.record_drift_report(project="p", model_version=1, fired=True, reason="drift")
    handled = s.update_drift_report(report["id"], handled_by="run-1")
    assert handled["handled_by"] == "run-1" and handled["handled_at"] is None
    assert handled["reason"] == "drift" and handled["fired"] is True
    with pytest.raises(KeyError, match="drift_reports"):
        s.update_drift_report(999, handled_by="run-2")


def test_recording_a_training_run_again_keeps_the_columns_not_given(tmp_path: Path) -> None:
    s = store(tmp_path)
    first = s.record_training(**REQUIRED["record_training"], trigger="drift", trials=3)
    again = s.record_training(**REQUIRED["record_training"], trials=5)
    assert again["id"] == first["id"]
    assert (again["trials"], again["trigger"]) == (5, "drift")


def test_the_sqlite_store_uses_wal_with_a_busy_timeout(tmp_path: Path) -> None:
    from sqlalchemy import text

    from mlops_lib.lineage.store import SQLITE_BUSY_TIMEOUT, engine_for

    url = f"sqlite:///{tmp_path / 'lineage.db'}"
    migrate(url)
    engine = engine_for(url)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == SQLITE_BUSY_TIMEOUT * 1000
    LineageStore(engine).record_dataset(project="p", commit_id="c", rows=1, schema_hash="h")
    assert LineageStore(engine_for(url)).datasets("p")[0]["commit_id"] == "c"


def test_retried_tasks_write_no_duplicate_rows(tmp_path: Path) -> None:
    s = store(tmp_path)
    for _ in range(2):  # a task retried after its write
        s.record_dataset(project="p", commit_id="c1", rows=10, schema_hash="h")
        s.record_decision(project="p", version=1, decision="promote", reason="better")
        s.record_drift_report(project="p", model_version=1, rows=5, dag_run_id="monitor-1")
    assert [d["decision"] for d in s.decisions("p", 1)] == ["promote"]
    assert len(s.drift_reports("p")) == 1
    # Runs outside a DAG (CLI, tests) have no run id: each is its own row.
    s.record_drift_report(project="p", model_version=1, rows=5)
    s.record_drift_report(project="p", model_version=1, rows=5)
    assert len(s.drift_reports("p")) == 3
    # An operator's approval after the gate's verdict is a second row.
    s.record_decision(project="p", version=1, decision="approved", reason="operator")
    assert [d["decision"] for d in s.decisions("p", 1)] == ["promote", "approved"]


def _fail(s: LineageStore, stage: str, at: datetime, **more: Any) -> FailureRow:
    return s.record_failure(
        project="p",
        dag_id=f"p__{stage}",
        stage=stage,
        dag_run_id=more.pop("dag_run_id", "manual__1"),
        task_id="train",
        cause="ValueError: boom",
        try_number=2,
        failed_at=at,
        **more,
    )


def test_a_fresh_store_records_failures_and_hands_back_the_newest_first(tmp_path: Path) -> None:
    s = store(tmp_path)
    assert "failures" in inspect(s.engine).get_table_names()
    assert s.last_failure("p") is None and s.failures("p") == []
    now = datetime.now(UTC)
    older = _fail(s, "ingest", now - timedelta(hours=2), dag_run_id="r1")
    newer = _fail(s, "train", now - timedelta(hours=1), dag_run_id="r2")
    assert [f["id"] for f in s.failures("p")] == [newer["id"], older["id"]]
    assert [f["id"] for f in s.failures("p", limit=1)] == [newer["id"]]
    last = s.last_failure("p")
    assert last is not None and last["resolved"] is False
    assert (last["stage"], last["dag_id"], last["dag_run_id"]) == ("train", "p__train", "r2")
    assert (last["task_id"], last["try_number"], last["cause"]) == ("train", 2, "ValueError: boom")
    assert last["failed_at"].startswith((now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
    assert s.last_failure("other") is None


def test_a_failure_callback_that_runs_twice_leaves_one_row(tmp_path: Path) -> None:
    s = store(tmp_path)
    now = datetime.now(UTC)
    first = _fail(s, "train", now)
    again = _fail(s, "train", now)
    assert again["id"] == first["id"] and len(s.failures("p")) == 1


def _training(s: LineageStore, run: str, dag_id: str) -> None:
    s.record_training(**(REQUIRED["record_training"] | {"mlflow_run_id": run, "dag_id": dag_id}))


def test_a_training_failure_is_resolved_by_a_later_training_run_of_its_dag(tmp_path: Path) -> None:
    s = store(tmp_path)
    _fail(s, "train", datetime.now(UTC) - timedelta(minutes=1))
    _training(s, "other-dag", "p__continuous_training")
    assert s.last_failure("p")["resolved"] is False  # type: ignore[index]
    _training(s, "after", "p__train")
    assert s.last_failure("p")["resolved"] is True  # type: ignore[index]


def test_a_success_older_than_the_failure_does_not_resolve_it(tmp_path: Path) -> None:
    s = store(tmp_path)
    _training(s, "before", "p__train")
    _fail(s, "train", datetime.now(UTC) + timedelta(seconds=1))
    _fail(s, "train", datetime.now(UTC) - timedelta(minutes=1), dag_run_id="r-old")
    last = s.last_failure("p")
    assert last is not None and last["dag_run_id"] == "manual__1" and last["resolved"] is False


def test_deploy_ingest_and_monitor_failures_are_resolved_by_their_stage_success(
    tmp_path: Path,
) -> None:
    s = store(tmp_path)
    past = datetime.now(UTC) - timedelta(minutes=1)
    _fail(s, "deploy", past)
    s.record_deployment(project="p", bento_tag="b:1", model_version=1, state="failed")
    assert s.last_failure("p")["resolved"] is False  # type: ignore[index]
    s.record_deployment(
        project="p", bento_tag="b:2", model_version=1, activated_at=datetime.now(UTC)
    )
    assert s.last_failure("p")["resolved"] is True  # type: ignore[index]
    _fail(s, "ingest", past + timedelta(seconds=1))
    assert s.last_failure("p")["resolved"] is False  # type: ignore[index]
    s.record_dataset(**REQUIRED["record_dataset"])
    assert s.last_failure("p")["resolved"] is True  # type: ignore[index]
    _fail(s, "monitor", past + timedelta(seconds=2))
    s.record_drift_report(project="p", model_version=1)
    assert s.last_failure("p")["resolved"] is True  # type: ignore[index]


def test_a_failure_of_a_stage_that_records_no_success_stays_unresolved(tmp_path: Path) -> None:
    s = store(tmp_path)
    _fail(s, "ingest_labels", datetime.now(UTC) - timedelta(minutes=1))
    s.record_dataset(**REQUIRED["record_dataset"])
    _training(s, "m", "p__ingest_labels")
    assert s.last_failure("p")["resolved"] is False  # type: ignore[index]


def test_deployment_replica_ports_round_trip_and_default_to_none(tmp_path: Path) -> None:
    s = store(tmp_path)
    dep = s.record_deployment(project="p", bento_tag="mlops-p:a", model_version=1)
    assert dep["ports"] is None
    placed = s.update_deployment(dep["id"], ports=[4001, 4002, 4003], port=4001)
    assert placed["ports"] == [4001, 4002, 4003] and placed["port"] == 4001
    assert s.deployment(dep["id"])["ports"] == [4001, 4002, 4003]
    assert s.update_deployment(dep["id"], state="active")["ports"] == [4001, 4002, 4003]
    moved = s.record_deployment(project="p", bento_tag="mlops-p:b", model_version=2, ports=[5000])
    assert [d["ports"] for d in s.deployments("p")] == [[5000], [4001, 4002, 4003]]
    assert moved["ports"] == [5000]


def test_the_replica_ports_migration_keeps_the_deployments_it_finds(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from mlops_lib.lineage.store import MIGRATIONS

    url = f"sqlite:///{tmp_path / 'lineage.db'}"
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "0007")  # a store from before replicas, with a live deployment
    with create_engine(url).begin() as db:
        db.execute(
            text(
                "INSERT INTO deployments (project, bento_tag, model_tag, model_version, "
                "model_uri, port, url, state, reason, dag_run_id, runtime, runtime_reason, "
                "created_at, updated_at) VALUES ('p', 'mlops-p:a', '', 1, '', 4000, "
                "'http://127.0.0.1:4000', 'active', '', '', 'onnx', '', "
                "'2026-11-29 00:00:00', '2026-11-29 00:00:00')"
            )
        )
    migrate(url)
    columns = {c["name"] for c in inspect(create_engine(url)).get_columns("deployments")}
    assert "ports" in columns
    s = LineageStore(create_engine(url))
    (live,) = s.deployments("p", "active")
    assert (live["port"], live["ports"]) == (4000, None)
    assert s.update_deployment(live["id"], ports=[4000, 4001])["ports"] == [4000, 4001]
