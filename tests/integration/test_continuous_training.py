"""Continuous training on the real stack, for keys of every type.

Each project has a champion trained on a clean batch and no cooldown. Served rows reach the
prediction log through the platform's own writer (as a deployment ships them), with the
instance's key and event time; labels arrive through the labels ingestion; a fired drift
report starts the ``<project>__continuous_training`` DAG. The tests check what it learns
from: the production rows with their own keys, nothing when nothing is new, and an alert
when the production batch is rejected.
"""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from mlops_lib import demo_data
from mlops_lib import versioning as vc
from mlops_lib.airflow_api import AirflowClient
from mlops_lib.settings import Settings
from mlops_lib.tracking import connect as connect_mlflow

from .conftest import CT_PROJECTS, approve_champion, mlops_cli, register_model

pytestmark = pytest.mark.integration


def keyed(frame: pd.DataFrame, key_type: str, offset: int) -> pd.DataFrame:
    """Demo rows whose key ``customer_id`` has the project's type (unique per offset)."""
    ids = range(offset, offset + len(frame))
    if key_type == "int":
        frame["customer_id"] = list(ids)
    elif key_type == "datetime":
        frame["customer_id"] = pd.Timestamp("2020-01-01", tz="UTC") + pd.to_timedelta(
            list(ids), unit="s"
        )
    else:
        frame["customer_id"] = [f"K{i:08d}" for i in ids]
    return frame


@pytest.fixture(scope="module")
def champions(stack: Settings, tmp_path_factory) -> dict[str, dict]:
    """Per key type: a clean batch on main and a champion trained on it. The string-keyed
    project's champion comes from the platform's training (train, gate, promote: what
    "training again would repeat it" compares with); the others' are fitted here."""
    from sklearn.linear_model import LogisticRegression

    from mlops_lib.features import build_pipeline, model_input
    from mlops_lib.ingest import ingest_now
    from mlops_lib.registry import evaluate_gate, promote
    from mlops_lib.spec import project_spec
    from mlops_lib.training import train

    airflow = AirflowClient.from_settings(stack)
    out = {}
    for key_type, project in CT_PROJECTS.items():
        spec = project_spec(project, stack)
        batch = keyed(demo_data.generate("clean", rows=3000, seed=701), key_type, 0)
        folder = tmp_path_factory.mktemp(f"ct-{key_type}")
        source = demo_data.write(batch, folder / "b.parquet")
        commit = ingest_now(project, source=str(source), settings=stack)["commit_id"]
        if key_type == "string":
            version = train(project, commit, dag_id="ct-test", run_id=project, settings=stack)[
                "version"
            ]
            decision = evaluate_gate(project, version, commit, settings=stack)
            assert decision["decision"] == "promote", decision
            promote(project, version, stack)
        else:
            model = build_pipeline(spec, LogisticRegression(max_iter=500))
            model.fit(model_input(batch, spec), batch["churned"])
            version, _ = register_model(stack, project, model, tags={"lakefs_commit": commit})
            approve_champion(stack, project, version)
        airflow.prepare(f"{project}__continuous_training", timeout=180)
        out[key_type] = {"spec": spec, "version": version, "commit": commit}
    return out


def serve(stack: Settings, spec, frame: pd.DataFrame) -> str:
    """Rows served under one request id, written by the prediction log and shipped to
    lakeFS; returns the request id."""
    from mlops_lib.serving.prediction_log import PredictionLog, lakefs_shipper

    request_id = uuid.uuid4().hex
    rows = frame[spec.features + spec.identity].to_dict(orient="records")
    for row in rows:  # as the request schema hands them on: Python values, not NumPy's
        for name, value in row.items():
            row[name] = value.to_pydatetime() if isinstance(value, pd.Timestamp) else value
    spool = Path(tempfile.mkdtemp(prefix="ct-spool-"))
    plog = PredictionLog(spec.name, "1", spool, lakefs_shipper(spec.name, stack)).start()
    plog.record(request_id, rows, [0] * len(rows), [0.5] * len(rows))
    assert plog.close() == 0, "prediction log left files spooled"
    return request_id


def label(stack: Settings, spec, request_id: str, frame: pd.DataFrame, tmp_path: Path) -> None:
    from mlops_lib.labels import ingest_labels

    path = tmp_path / f"labels-{request_id}.csv"
    pd.DataFrame(
        {"request_id": request_id, "row": range(len(frame)), "churned": frame["churned"]}
    ).to_csv(path, index=False)
    ingest_labels(spec.name, path, settings=stack)


def fired_report(stack: Settings, project: str, version: int) -> int:
    """A drift report whose policy fired, as the monitor records one."""
    from mlops_lib.lineage import lineage_store

    row = lineage_store(stack).record_drift_report(
        project=project,
        model_version=version,
        rows=1000,
        drifted_features=["monthly_charges", "support_calls"],
        fired=True,
        reason="2 of 9 features drifted (test)",
    )
    return row["id"]


def retrain(stack: Settings, project: str) -> tuple[str, dict[str, str]]:
    airflow = AirflowClient.from_settings(stack)
    dag_id = f"{project}__continuous_training"
    run_id, state = airflow.run(dag_id, timeout=900)
    assert state == "success", airflow.task_states(dag_id, run_id)
    return run_id, airflow.task_states(dag_id, run_id)


def versions(stack: Settings, project: str) -> list[int]:
    found = connect_mlflow(stack).search_model_versions(f"name = '{project}'")
    return sorted(int(v.version) for v in found)


def drift_report(stack: Settings, report_id: int) -> dict:
    from mlops_lib.lineage import lineage_store

    return lineage_store(stack).drift_report(report_id)


@pytest.mark.parametrize("key_type", ["datetime"])
def test_retraining_learns_from_production_rows_under_their_own_keys(
    stack: Settings, champions: dict, key_type: str, tmp_path: Path
) -> None:
    from mlops_lib.datasets import read_dataset
    from mlops_lib.registry import model_version_tags

    world = champions[key_type]
    spec, project = world["spec"], world["spec"].name
    drifted = keyed(demo_data.generate("drifted", rows=1500, seed=702), key_type, 10_000)
    request_id = serve(stack, spec, drifted)
    label(stack, spec, request_id, drifted, tmp_path)
    report_id = fired_report(stack, project, world["version"])
    run_id, states = retrain(stack, project)
    assert states["resolve_data"] == "success" and states["train"] == "success", states
    newest = versions(stack, project)[-1]
    commit = model_version_tags(project, newest, stack)["lakefs_commit"]
    data = read_dataset(project, commit, stack)
    production = data[data["request_id"] == request_id]
    assert len(production) == len(drifted)
    # The instances' own keys, typed as the spec says, and their provenance beside them.
    assert sorted(production["customer_id"].tolist()) == sorted(drifted["customer_id"].tolist())
    expected = {"int": "int64", "datetime": "datetime64"}[key_type]
    assert str(production["customer_id"].dtype).startswith(expected), production.dtypes
    assert sorted(production["row"].tolist()) == list(range(len(drifted)))
    outcome = drift_report(stack, report_id)["outcome"]
    assert f"with {len(drifted)} labelled production rows folded in" in outcome, outcome
    assert drift_report(stack, report_id)["handled_by"] == run_id
    reason = model_version_tags(project, newest, stack)["gate_reason"]
    assert "on the production slice" in reason, reason


def test_a_retraining_with_nothing_new_ends_skipped_with_its_reason(
    stack: Settings, champions: dict
) -> None:
    from mlops_lib.registry import champion_commit

    world = champions["string"]
    project = world["spec"].name
    assert champion_commit(project, stack) == vc.head(project, settings=stack)
    before = versions(stack, project)
    report_id = fired_report(stack, project, world["version"])
    run_id, states = retrain(stack, project)
    assert states["claim"] == "success" and states["resolve_data"] == "skipped", states
    assert states["train"] == "skipped" and states["promote"] == "skipped", states
    airflow = AirflowClient.from_settings(stack)
    log = airflow.task_log_tail(f"{project}__continuous_training", run_id, "resolve_data", 1)
    assert "nothing new to learn from" in log
    outcome = drift_report(stack, report_id)["outcome"]
    assert outcome.startswith("skipped: nothing new to learn from"), outcome
    lineage = " ".join(mlops_cli(stack, "lineage", project).stdout.split())
    assert "skipped: nothing new to learn from" in lineage, lineage
    assert versions(stack, project) == before


def test_a_rejected_production_batch_is_alerted_and_shown(
    stack: Settings, champions: dict, alerts: list[dict], tmp_path: Path
) -> None:
    world = champions["string"]
    spec, project = world["spec"], world["spec"].name
    head = vc.head(project, settings=stack)
    # Instances that claim to happen in two days: the gate's event_time_not_in_future rule.
    future = keyed(demo_data.generate("drifted", rows=1200, seed=703), "string", 20_000)
    future["event_time"] = pd.Timestamp(datetime.now(UTC) + timedelta(days=2))
    request_id = serve(stack, spec, future)
    label(stack, spec, request_id, future, tmp_path)
    report_id = fired_report(stack, project, world["version"])
    run_id, states = retrain(stack, project)
    assert states["resolve_data"] == "skipped" and states["train"] == "skipped", states
    assert vc.head(project, settings=stack) == head, "a rejected batch reached main"
    mine = [a for a in alerts if a.get("run_id") == run_id]
    assert mine and mine[0]["event"] == "production_batch_rejected", alerts[-3:]
    assert mine[0]["project"] == project and mine[0]["task_id"] == "resolve_data"
    assert mine[0]["report"].startswith("lakefs://") and "_validation.json" in mine[0]["report"]
    outcome = drift_report(stack, report_id)["outcome"]
    assert f"production batch rejected: {mine[0]['report']}" in outcome, outcome
    assert mine[0]["report"] in mlops_cli(stack, "lineage", project).stdout.replace("\n", " ")
    airflow = AirflowClient.from_settings(stack)
    log = airflow.task_log_tail(f"{project}__continuous_training", run_id, "resolve_data", 1)
    assert "MLOps alert:" in log and "event_time_not_in_future" in log
