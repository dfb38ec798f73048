"""The feature store on the real stack: Feast views on versioned data, end to end.

One loop, driven by the Airflow scheduler: a batch of customer snapshots and its events
table are ingested; the ``__features`` DAG computes the views from the new lakeFS commit,
materializes them and serves them (``feast serve``); training runs on the features asset
with its training set joined point-in-time; the deploy DAG serves the champion, which
looks the customer's features up online. The tests then check what each part left.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest

from mlops_lib import demo_data
from mlops_lib import versioning as vc
from mlops_lib.airflow_api import AirflowClient
from mlops_lib.feature_store import server
from mlops_lib.feature_store.store import published
from mlops_lib.layout import feature_view_path
from mlops_lib.lineage import lineage_store
from mlops_lib.settings import Settings
from mlops_lib.spec import project_spec
from mlops_lib.tracking import connect as connect_mlflow

from .conftest import FEATURES_PROJECT, features_events_dir, mlops_cli, wait_for

pytestmark = pytest.mark.integration

PROJECT = FEATURES_PROJECT
DAGS = [f"{PROJECT}__{stage}" for stage in ("ingest", "features", "train", "deploy")]


def follow_asset_run(airflow: AirflowClient, dag_id: str, since: str) -> tuple[str, str]:
    run_id = airflow.wait_for_asset_run(dag_id, since=since, timeout=300)
    return run_id, airflow.follow(dag_id, run_id, timeout=900)


@pytest.fixture(scope="module")
def loop(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Ingest -> features -> train -> deploy, each run started by the one before."""
    airflow = AirflowClient.from_settings(stack)
    for dag_id in DAGS:
        airflow.prepare(dag_id, timeout=180)
    batch = demo_data.generate("clean", rows=3000, seed=901)
    events = demo_data.generate_events(batch, seed=901)
    events.to_parquet(features_events_dir(stack.projects_dir) / "batch-1.parquet", index=False)
    source = demo_data.write(batch, tmp_path_factory.mktemp("features") / "batch-1.parquet")
    since = datetime.now(UTC).isoformat()
    _, state = airflow.run(DAGS[0], {"source": str(source)}, timeout=600)
    assert state == "success"
    runs = {}
    for dag_id in DAGS[1:]:
        run_id, state = follow_asset_run(airflow, dag_id, since)
        assert state == "success", (dag_id, airflow.task_states(dag_id, run_id))
        runs[dag_id] = run_id
    return {
        "airflow": airflow,
        "batch": batch,
        "events": events,
        "runs": runs,
        "spec": project_spec(PROJECT, stack),
    }


def xcom(airflow: AirflowClient, dag_id: str, run_id: str, task_id: str):
    path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
    return airflow.request("GET", path).json()["value"]


def predict(stack: Settings, rows: list[dict]) -> httpx.Response:
    url = f"{stack.serving_base_url}/{PROJECT}/predict"
    return httpx.post(url, json={"instances": rows}, timeout=30)


def request_rows(loop: dict, n: int, start: int = 0) -> list[dict]:
    """Rows as a client sends them: the key and the request-time columns, no store feature."""
    spec = loop["spec"]
    frame = loop["batch"][[spec.schema.key, *spec.features]].iloc[start : start + n]
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def test_an_ingest_computes_materializes_and_serves_the_views_of_its_commit(
    stack: Settings, loop: dict
) -> None:
    built = xcom(loop["airflow"], DAGS[1], loop["runs"][DAGS[1]], "publish_views")
    commit = built["commit_id"]
    assert vc.exists(PROJECT, commit, feature_view_path(PROJECT, "customer_activity"), stack)
    assert published(PROJECT, stack)["commit_id"] == commit
    listed = json.loads(mlops_cli(stack, "features", "list", PROJECT, "--json").stdout)
    assert listed["commit_id"] == commit
    (view,) = listed["feature_views"]
    assert view["name"] == "customer_activity" and view["materialization_intervals"]
    planned = mlops_cli(stack, "features", "plan", PROJECT)
    assert planned.returncode == 0, planned.stderr
    applied = mlops_cli(stack, "features", "apply", PROJECT)
    assert applied.returncode == 0, applied.stderr
    assert f"at commit {commit[:12]}" in applied.stdout  # main's head: the views' commit
    status = json.loads(mlops_cli(stack, "stack", "status", "--json").stdout)["services"]
    row = next(r for r in status if r["service"] == f"features/{PROJECT}")
    assert row["state"] == "healthy", row


def test_training_joins_each_labelled_row_with_the_views_at_its_own_time(
    stack: Settings, loop: dict
) -> None:
    built = xcom(loop["airflow"], DAGS[1], loop["runs"][DAGS[1]], "publish_views")
    commit, spec = built["commit_id"], loop["spec"]
    trained = xcom(loop["airflow"], DAGS[2], loop["runs"][DAGS[2]], "train")
    run = connect_mlflow(stack).get_run(trained["mlflow_run_id"])
    assert run.data.tags["mlops.features.commit"] == commit
    assert run.data.tags["mlops.features.registry_hash"] == built["registry_hash"]
    assert run.data.tags["mlops.features.views"] == "customer_activity"
    (link,) = lineage_store(stack).chain(PROJECT, trained["version"])
    assert link["training"]["features"]["registry_hash"] == built["registry_hash"]
    assert link["dataset"]["commit_id"] == commit and link["dataset"].get("rows")
    # The training set equals an as-of join of the view table: the latest row at or
    # before each label's time, within the TTL, never a later one.
    repo_dir = Path(built["path"])
    (training_set,) = repo_dir.glob("training_set-*.parquet")
    joined = pd.read_parquet(training_set)
    view = pd.read_parquet(repo_dir / "data" / "customer_activity.parquet")
    labels = vc.read_parquet(
        PROJECT,
        commit,
        [
            p
            for p in vc.list_paths(PROJECT, commit, f"datasets/{PROJECT}/", stack)
            if p.endswith("data.parquet")
        ],
        stack,
    )
    labels["customer_id"] = labels["customer_id"].astype(object)
    view["customer_id"] = view["customer_id"].astype(object)
    expected = (
        pd.merge_asof(
            labels.assign(t=pd.to_datetime(labels["event_time"], utc=True))
            .reset_index()
            .sort_values("t"),
            view.sort_values("event_timestamp"),
            left_on="t",
            right_on="event_timestamp",
            by="customer_id",
            tolerance=pd.Timedelta(days=90),
        )
        .set_index("index")
        .sort_index()
    )
    got = joined["customer_activity__tickets_90d"].astype("float64").to_numpy()
    want = expected["tickets_90d"].astype("float64").to_numpy()
    assert len(got) == len(want) == len(labels)
    assert pd.Series(got).fillna(-1).tolist() == pd.Series(want).fillna(-1).tolist()
    assert pd.Series(got).notna().mean() > 0.5, "most customers have events before their label"
    assert all(name in joined.columns for name in spec.store_features)


def test_a_prediction_sends_only_the_key_and_request_time_columns(
    stack: Settings, loop: dict
) -> None:
    resp = predict(stack, request_rows(loop, 5))
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["predictions"]) == 5
    # The deploy's smoke test looked its rows up online and found what the offline store
    # says as of now: no skew on a store just materialized.
    smoke = xcom(loop["airflow"], DAGS[3], loop["runs"][DAGS[3]], "smoke_test")
    assert smoke["feature_skew"] == dict.fromkeys(loop["spec"].store_features, 0.0), smoke


def test_an_unknown_customer_gets_422_naming_the_key(stack: Settings, loop: dict) -> None:
    rows = request_rows(loop, 2)
    rows[1]["customer_id"] = "NOBODY-0001"
    resp = predict(stack, rows)
    assert resp.status_code == 422, resp.text
    assert "customer_id" in resp.text and "NOBODY-0001" in resp.text


def test_the_feature_server_stopped_mid_traffic_gives_503_never_another_error(
    stack: Settings, loop: dict
) -> None:
    codes: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        rows = request_rows(loop, 3, start=10)
        while not stop.is_set():
            try:
                codes.append(predict(stack, rows).status_code)
            except httpx.HTTPError:
                codes.append(-1)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        wait_for(lambda: 200 in codes, "an answer before the stop", timeout=30)
        server.stop(stack, PROJECT)
        seen = len(codes)
        wait_for(lambda: len(codes) >= seen + 20, "20 answers after the stop", timeout=30)
    finally:
        stop.set()
        sender.join(timeout=60)
        server.ensure_running(PROJECT, stack)
    assert 200 in codes and 503 in codes, codes
    assert set(codes) <= {200, 503}, sorted(set(codes))
    assert predict(stack, request_rows(loop, 2)).status_code == 200


def test_bad_event_rows_fail_the_features_run_and_leave_main_unchanged(
    stack: Settings, loop: dict
) -> None:
    airflow: AirflowClient = loop["airflow"]
    bad = loop["events"].head(50).copy()
    bad.loc[bad.index[:3], "kind"] = "refund"
    bad_file = features_events_dir(stack.projects_dir) / "bad.parquet"
    bad.to_parquet(bad_file, index=False)
    before = vc.head(PROJECT, settings=stack)
    try:
        run_id, state = airflow.run(DAGS[1], {}, timeout=600)
    finally:
        bad_file.unlink()
    assert state == "failed"
    assert vc.head(PROJECT, settings=stack) == before
    log = airflow.task_log_tail(DAGS[1], run_id, "build_views", 1, lines=80)
    assert "kind" in log and "refund" in log, log
    # The files fixed, the run succeeds; the same tables again make no new commit.
    _, state = airflow.run(DAGS[1], {}, timeout=600)
    assert state == "success"
    assert vc.head(PROJECT, settings=stack) == before
