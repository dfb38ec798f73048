"""Monitoring and continuous training end to end on the real stack.

A champion is deployed and serving; clean, then drifted traffic goes through its endpoint;
the monitor DAG reports no drift, then drift on the shifted features only; the drift asset
starts continuous training, whose new version is gated and, when it wins, deployed; a second
drift report inside the cooldown starts no second retraining.

The story is built by a chain of module fixtures (``quiet`` -> ``stable`` -> ``drifted`` ->
``episode``), each one needing the one before it, so its steps happen in that order whatever
order the tests run in; each test asserts about the step it takes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlops_lib import demo_data
from mlops_lib.airflow_api import AirflowClient
from mlops_lib.settings import Settings

from .conftest import (
    MONITOR_PROJECT,
    PUBLISH_PROJECT,
    approve_champion,
    mlops_cli,
    register_model,
)

pytestmark = pytest.mark.integration
OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "monitor"
PROJECT = MONITOR_PROJECT
MONITOR = f"{PROJECT}__monitor"
DEPLOY = f"{PROJECT}__deploy"
CT = f"{PROJECT}__continuous_training"


@pytest.fixture(scope="module")
def world(stack: Settings, tmp_path_factory) -> dict:
    """A champion trained on a clean batch, with its reference profile, as training leaves it."""
    from sklearn.linear_model import LogisticRegression

    from mlops_lib.features import build_pipeline, model_input
    from mlops_lib.ingest import ingest_now
    from mlops_lib.monitoring.reference import reference_frame, save_reference
    from mlops_lib.spec import project_spec

    spec = project_spec(PROJECT, stack)
    folder = tmp_path_factory.mktemp("monitor-data")
    batch = demo_data.generate("clean", rows=6000, seed=601)
    published = ingest_now(
        PROJECT, source=str(demo_data.write(batch, folder / "b.parquet")), settings=stack
    )
    model = build_pipeline(spec, LogisticRegression(max_iter=500))
    model.fit(model_input(batch, spec), batch["churned"])
    version, run_id = register_model(
        stack, PROJECT, model, tags={"lakefs_commit": published["commit_id"]}
    )
    approve_champion(stack, PROJECT, version)
    save_reference(
        PROJECT,
        version,
        reference_frame(spec, model, batch),
        run_id=run_id,
        settings=stack,
    )
    airflow = AirflowClient.from_settings(stack)
    # Unpaused before any drift event: Airflow does not queue asset runs of paused DAGs.
    for dag_id in (MONITOR, DEPLOY, CT):
        airflow.prepare(dag_id, timeout=180)
    since = datetime.now(UTC).isoformat()
    airflow.emit_asset_event(f"{PROJECT}_champion", {"version": version})
    run_id = airflow.wait_for_asset_run(DEPLOY, since=since, timeout=180)
    assert airflow.follow(DEPLOY, run_id, timeout=600) == "success"
    return {"spec": spec, "airflow": airflow, "version": version}


def serve_traffic(stack: Settings, world: dict, scenario: str, rows: int, seed: int):
    """Requests to the project's stable endpoint; waits until the prediction log has them.
    Returns the labels of the rows sent (request id, row, target)."""
    from mlops_lib.labels import wait_logged
    from mlops_lib.traffic import send

    spec = world["spec"]
    df = demo_data.generate(scenario, rows=rows, seed=seed)
    url = f"{stack.serving_base_url}/{PROJECT}/predict"
    columns = spec.features + spec.identity
    out = send(url, df, columns, spec.target.column, rows_per_request=500, concurrency=1)
    missing = wait_logged(PROJECT, set(out.labels["request_id"]), stack)
    assert not missing, f"prediction log lacks {missing} of {out.requests} answered requests"
    return out.labels


def run_monitor(world: dict) -> dict:
    airflow: AirflowClient = world["airflow"]
    run_id, state = airflow.run(MONITOR, {"include_open_window": True}, timeout=600)
    assert state == "success", airflow.task_log_tail(MONITOR, run_id, "monitor", 1, lines=60)
    path = f"/dags/{MONITOR}/dagRuns/{run_id}/taskInstances/monitor/xcomEntries/return_value"
    return airflow.request("GET", path, params={"deserialize": "true"}).json()["value"]


@pytest.fixture(scope="module")
def quiet(world: dict) -> dict:
    """The first monitor run: the champion is serving, nobody has called it yet."""
    return run_monitor(world)


@pytest.fixture(scope="module")
def stable(stack: Settings, world: dict, quiet: dict) -> dict:
    """Clean traffic served and monitored."""
    serve_traffic(stack, world, "clean", 3000, seed=602)
    return run_monitor(world)


@pytest.fixture(scope="module")
def drifted(stack: Settings, world: dict, stable: dict, tmp_path_factory) -> dict:
    """Drifted traffic served, its labels ingested, and monitored."""
    world["airflow"].prepare(f"{PROJECT}__ingest_labels", timeout=180)
    labels = serve_traffic(stack, world, "drifted", 12000, seed=603)
    state, log = ingest_labels(world, labels, tmp_path_factory.mktemp("drift-labels"))
    assert state == "success", log
    return {"labels": labels, "report": run_monitor(world)}


def test_a_window_without_traffic_gives_a_report_that_says_so(stack: Settings, quiet: dict) -> None:
    import json as _json

    from mlops_lib import versioning as vc
    from mlops_lib.layout import MONITORING_BRANCH
    from mlops_lib.lineage import lineage_store

    out = quiet
    assert out["rows"] == 0 and not out["fired"] and out["drifted_features"] == [], out
    row = next(
        r for r in lineage_store(stack).drift_reports(PROJECT) if r["id"] == out["report_id"]
    )
    path = row["lakefs_uri"].split("/", 4)[-1].replace("report.html", "report.json")
    report = _json.loads(vc.read(PROJECT, MONITORING_BRANCH, path, stack))
    assert "no traffic in the monitored windows" in report["notes"]
    assert report["live_metric"]["note"] == "no labelled predictions"


def test_stable_traffic_reports_no_drift(world: dict, stable: dict) -> None:
    out = stable
    assert out["rows"] == 3000 and not out["fired"], out
    assert len(out["drifted_features"]) < world["spec"].monitoring.min_drifted_features


def ingest_labels(world: dict, frame, tmp_path) -> tuple[str, str]:
    airflow: AirflowClient = world["airflow"]
    path = tmp_path / "labels.csv"
    frame.to_csv(path, index=False)
    run_id, state = airflow.run(f"{PROJECT}__ingest_labels", {"source": str(path)}, timeout=300)
    return state, airflow.task_log_tail(f"{PROJECT}__ingest_labels", run_id, "ingest_labels", 1)


def test_a_bad_labels_batch_is_refused_naming_every_problem_and_stores_nothing(
    stack: Settings, world: dict, drifted: dict, tmp_path
) -> None:
    from mlops_lib import versioning as vc
    from mlops_lib.layout import MONITORING_BRANCH, labels_prefix

    bad = drifted["labels"].head(5).copy()
    bad.loc[0, "churned"] = 7
    bad.loc[1, "request_id"] = "never-served"
    stored = vc.list_paths(PROJECT, MONITORING_BRANCH, labels_prefix(PROJECT), stack)
    state, log = ingest_labels(world, bad, tmp_path)
    assert state == "failed"
    assert "labels_allowed [churned]" in log and "labels_known [request_id]" in log, log
    assert vc.list_paths(PROJECT, MONITORING_BRANCH, labels_prefix(PROJECT), stack) == stored


def test_drifted_traffic_fires_on_the_shifted_features_only(
    stack: Settings, world: dict, drifted: dict
) -> None:
    from mlops_lib import versioning as vc
    from mlops_lib.layout import MONITORING_BRANCH
    from mlops_lib.lineage import lineage_store

    # The labels of the drifted traffic arrived: the report carries the live metric.
    out = drifted["report"]
    live = out["live_metric"]
    assert live["metric"] == "roc_auc" and live["rows"] == 12000, live
    assert 0.5 < live["value"] < 1.0, live
    assert out["fired"], out
    shifted = set(demo_data.DRIFTED_FEATURES)
    drifted = set(out["drifted_features"])
    assert len(drifted & shifted) >= 3, out
    assert not drifted & {"age", "region", "payment_method", "internet_service"}, out
    report = next(
        r for r in lineage_store(stack).drift_reports(PROJECT) if r["id"] == out["report_id"]
    )
    assert report["fired"]
    assert report["live_metric"] == live["value"] and report["labelled_rows"] == 12000
    # Kept for the record: the whole report of this run (scores per column).
    path = report["lakefs_uri"].split("/", 4)[-1].replace("report.html", "report.json")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "drift-report.json").write_bytes(vc.read(PROJECT, MONITORING_BRANCH, path, stack))
    # The asset event carries the verdict for the drift sensor and continuous training.
    events = (
        world["airflow"]
        .request("GET", "/assets/events", params={"limit": 50, "order_by": "-timestamp"})
        .json()["asset_events"]
    )
    mine = [e for e in events if e.get("extra", {}).get("report_id") == out["report_id"]]
    assert mine and mine[0]["extra"]["fired"] is True
    import mlflow

    run = mlflow.MlflowClient(stack.mlflow_url).get_run(out["mlflow_run_id"])
    assert run.data.metrics["drifted_features"] == len(out["drifted_features"])


def test_monitor_report_command_writes_the_html(stack: Settings, drifted: dict, tmp_path) -> None:
    target = tmp_path / "report.html"
    proc = mlops_cli(stack, "monitor", "report", PROJECT, "--out", str(target))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "policy FIRED" in proc.stdout
    html = target.read_text()
    assert "<svg" in html and "monthly_charges" in html


def ct_runs(airflow: AirflowClient) -> list[dict]:
    return airflow.request(
        "GET", f"/dags/{CT}/dagRuns", params={"limit": 20, "order_by": "-run_after"}
    ).json()["dag_runs"]


def follow_ct_run(airflow: AirflowClient, seen: set[str], wanted: str) -> tuple[str, dict]:
    """Follow the first CT run not in ``seen`` whose sensor ends ``wanted``."""
    import time

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        for r in reversed(ct_runs(airflow)):
            if r["dag_run_id"] in seen:
                continue
            states = airflow.task_states(CT, r["dag_run_id"])
            sensor = states.get("wait_for_drift")
            if sensor in ("success", "skipped", "failed"):
                if sensor != wanted:
                    seen.add(r["dag_run_id"])
                    continue
                airflow.follow(CT, r["dag_run_id"], timeout=900)
                return r["dag_run_id"], airflow.task_states(CT, r["dag_run_id"])
        time.sleep(3)
    raise AssertionError(f"no {CT} run whose sensor ended {wanted}")


@pytest.fixture(scope="module")
def episode(stack: Settings, world: dict, drifted: dict) -> dict:
    """The continuous-training run the fired report started, followed to its end (and the
    deploy run its promotion started, if it won)."""
    import mlflow

    from mlops_lib.lineage import lineage_store

    airflow: AirflowClient = world["airflow"]
    store = lineage_store(stack)
    run_id, states = follow_ct_run(airflow, set(), "success")
    report = {r["id"]: r for r in store.drift_reports(PROJECT)}[drifted["report"]["report_id"]]
    versions = mlflow.MlflowClient(stack.mlflow_url).search_model_versions(f"name = '{PROJECT}'")
    newest = max(versions, key=lambda v: int(v.version))
    promoted = newest.tags.get("gate_decision") == "promote"
    if promoted:
        deploy_run = airflow.wait_for_asset_run(DEPLOY, since=report["handled_at"], timeout=300)
        assert airflow.follow(DEPLOY, deploy_run, timeout=600) == "success"
    return {
        "run_id": run_id,
        "states": states,
        "report": report,
        "newest": newest,
        "versions": len(versions),
        "dataset": store.datasets(PROJECT)[0],
        "serving": newest.version if promoted else str(world["version"]),
    }


def served_version(stack: Settings, world: dict) -> str:
    import httpx

    one = json.loads(
        demo_data.generate("clean", rows=1, seed=9)[world["spec"].features].to_json(
            orient="records"
        )
    )
    return httpx.post(
        f"{stack.serving_base_url}/{PROJECT}/predict", json={"instances": one}, timeout=30
    ).json()["model_version"]


def test_drift_episode_starts_one_retraining(stack: Settings, world: dict, episode: dict) -> None:
    """The fired report's asset event starts continuous training; the new version carries
    the report id and was trained on the labelled production rows; a win is served."""
    from mlops_lib import versioning as vc
    from mlops_lib.layout import MAIN, production_prefix

    states = episode["states"]
    assert states["claim"] == "success" and states["train"] == "success", states
    assert states["promote"] in ("success", "skipped")
    assert episode["report"]["handled_by"] == episode["run_id"]
    newest = episode["newest"]
    assert newest.tags["drift_report_id"] == str(episode["report"]["id"])
    # The labelled production rows went through the gate onto main and into training.
    folded = [
        p
        for p in vc.list_paths(PROJECT, MAIN, production_prefix(PROJECT), stack)
        if p.endswith(".parquet")
    ]
    assert len(folded) == 1 and "labels-through=" in folded[0], folded
    # Under the instances' own keys (the drifted batch's customer ids), with their provenance.
    rows = vc.read_parquet(PROJECT, MAIN, folded, stack)
    assert rows["customer_id"].str.startswith("C0603").all(), rows["customer_id"].head()
    assert rows["customer_id"].is_unique and rows["request_id"].notna().all()
    dataset = episode["dataset"]
    assert dataset["rows"] == 12000 and "production" in dataset["partition"], dataset
    assert newest.tags["lakefs_commit"] == dataset["commit_id"]
    assert newest.tags["gate_decision"] in ("promote", "reject")
    # Judged on what production saw: the holdout's labelled production rows decide.
    assert "on the production slice" in newest.tags["gate_reason"], newest.tags["gate_reason"]
    # A win is served by the deploy DAG (champion asset); a loss leaves the champion serving.
    assert served_version(stack, world) == episode["serving"]


def test_drift_again_within_the_cooldown_starts_no_retraining(
    stack: Settings, world: dict, episode: dict
) -> None:
    import mlflow

    airflow: AirflowClient = world["airflow"]
    seen = {r["dag_run_id"] for r in ct_runs(airflow)}
    serve_traffic(stack, world, "drifted", 3000, seed=604)
    assert run_monitor(world)["fired"]
    run_id, states = follow_ct_run(airflow, seen, "skipped")
    assert states["train"] == "skipped", states
    log = airflow.task_log_tail(CT, run_id, "wait_for_drift", 1, lines=60)
    assert "same episode" in log
    after = mlflow.MlflowClient(stack.mlflow_url).search_model_versions(f"name = '{PROJECT}'")
    assert len(after) == episode["versions"]
    assert served_version(stack, world) == episode["serving"]


def test_a_window_profile_takes_in_files_shipped_late(stack: Settings) -> None:
    """A file shipped after its hour window was profiled (lakeFS was down, a deployment
    restarted) makes the window's profile again, with every file's rows."""
    import io

    from mlops_lib import layout
    from mlops_lib import versioning as vc
    from mlops_lib.layout import MONITORING_BRANCH, prediction_log_path
    from mlops_lib.monitoring.windows import profile_windows, stored_profiles
    from mlops_lib.spec import project_spec

    spec = project_spec(PUBLISH_PROJECT, stack)
    hour = datetime(2020, 1, 1, 5, tzinfo=UTC)

    def ship(name: str, rows: int, seed: int) -> None:
        frame = demo_data.generate("clean", rows=rows, seed=seed)[spec.features]
        frame["prediction"], frame["score"] = 0, 0.5
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        path = prediction_log_path(PUBLISH_PROJECT, hour, f"{name}.parquet")
        vc.upload(PUBLISH_PROJECT, MONITORING_BRANCH, path, buf.getvalue(), settings=stack)

    vc.ensure_branch(PUBLISH_PROJECT, MONITORING_BRANCH, settings=stack)
    ship("on-time", 300, 1)
    first = [w for w in profile_windows(spec, settings=stack) if w["window"] == hour.isoformat()]
    assert [w["rows"] for w in first] == [300]
    mine = hour.isoformat()
    again = profile_windows(spec, settings=stack)
    assert [w for w in again if w["window"] == mine] == []  # nothing new: not profiled again
    ship("late", 200, 2)
    again = profile_windows(spec, settings=stack)
    assert [w["rows"] for w in again if w["window"] == mine] == [500]
    path = stored_profiles(spec, stack)[hour]
    assert layout.profiled_files(path) == 2
    prefix = layout.profiles_prefix(PUBLISH_PROJECT)
    listed = vc.list_paths(PUBLISH_PROJECT, MONITORING_BRANCH, prefix, stack)
    assert [p for p in listed if layout.window_of(p) == hour] == [path]
