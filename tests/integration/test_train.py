"""Training on the real stack: asset-triggered AutoML, MLflow registry, gate, lineage, faults."""

from __future__ import annotations

import os
import signal
import socket
import time
from urllib.parse import quote

import httpx
import pytest

from mlops_lib import demo_data, platform_stack
from mlops_lib import versioning as vc
from mlops_lib.airflow_api import AirflowClient
from mlops_lib.settings import Settings
from mlops_lib.spec import project_spec

from .conftest import FAULTS_PROJECT, airflow_token, mlops_cli

pytestmark = pytest.mark.integration

PROJECT = "churn"
INGEST, TRAIN = f"{PROJECT}__ingest", f"{PROJECT}__train"


def mlflow_client(stack: Settings):
    from mlflow.tracking import MlflowClient

    return MlflowClient(stack.mlflow_url)


def xcom(client: AirflowClient, dag_id: str, run_id: str, task_id: str):
    path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
    return client.request("GET", path, params={"deserialize": "true"}).json()["value"]


def versions_of(stack: Settings, project: str) -> list:
    try:
        return list(mlflow_client(stack).search_model_versions(f"name = '{project}'"))
    except Exception:
        return []


def alias_version(stack: Settings, alias: str) -> str | None:
    try:
        return mlflow_client(stack).get_model_version_by_alias(PROJECT, alias).version
    except Exception:
        return None


def train_on_event(airflow: AirflowClient, commit: str) -> tuple[str, str]:
    """The train run a dataset asset event naming ``commit`` starts: (run id, final state)."""
    from datetime import UTC, datetime

    since = datetime.now(UTC).isoformat()
    airflow.emit_asset_event(f"{PROJECT}_dataset", {"commit_id": commit})
    run_id = airflow.wait_for_asset_run(TRAIN, since=since, timeout=300)
    return run_id, airflow.follow(TRAIN, run_id, timeout=600)


def train_again(stack: Settings, auto_run: dict, dag_id: str):
    """Train once more on the auto run's commit (the champion's: allowed on purpose)."""
    from mlops_lib.training import train

    return train(
        PROJECT,
        auto_run["commit"],
        dag_id=dag_id,
        run_id=f"{dag_id}-{time.time_ns()}",
        retrain_unchanged=True,
        settings=stack,
    )


def move_main(stack: Settings) -> str:
    """A new commit on main that leaves the dataset as it is (a note beside it)."""
    branch = f"note-{time.time_ns()}"
    vc.fresh_branch(PROJECT, branch, settings=stack)
    vc.upload(PROJECT, branch, f"notes/{branch}.txt", b"same data", settings=stack)
    vc.commit(PROJECT, branch, "a note, the data unchanged", {}, stack)
    return vc.merge(PROJECT, branch, settings=stack)


@pytest.fixture(scope="module")
def airflow(stack: Settings) -> AirflowClient:
    client = AirflowClient.from_settings(stack)
    for dag_id in (INGEST, TRAIN):
        client.prepare(dag_id, timeout=180)
    return client


@pytest.fixture(scope="module")
def auto_run(stack: Settings, airflow: AirflowClient, tmp_path_factory) -> dict:
    """Ingest a batch through the DAG and follow the train run its asset event starts."""
    folder = tmp_path_factory.mktemp("train-batches")
    src = demo_data.write(demo_data.generate("clean", seed=201), folder / "clean.parquet")
    _, state = airflow.run(INGEST, {"source": str(src)}, timeout=600)
    assert state == "success"
    commit = vc.head(PROJECT, settings=stack)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        runs = airflow.request(
            "GET", f"/dags/{TRAIN}/dagRuns", params={"run_type": "asset_triggered", "limit": 50}
        ).json()["dag_runs"]
        for r in runs:
            if r["state"] not in ("success", "failed"):
                continue
            try:
                used = xcom(airflow, TRAIN, r["dag_run_id"], "resolve_data")
            except Exception:
                continue
            if used == commit:
                assert r["state"] == "success", r
                trained = xcom(airflow, TRAIN, r["dag_run_id"], "train")
                # The aliases as this run left them (later tests train more versions).
                aliases = {a: alias_version(stack, a) for a in ("challenger", "champion")}
                return {
                    "run_id": r["dag_run_id"],
                    "commit": commit,
                    "trained": trained,
                    "aliases": aliases,
                }
        time.sleep(3)
    raise AssertionError(f"no asset-triggered {TRAIN} run trained on {commit}")


def test_asset_event_trains_on_that_exact_commit(stack: Settings, auto_run: dict) -> None:
    trained = auto_run["trained"]
    assert trained["commit"] == auto_run["commit"]
    run = mlflow_client(stack).get_run(trained["mlflow_run_id"])
    tags = run.data.tags
    assert tags["lakefs_commit"] == auto_run["commit"]
    assert tags["dag_id"] == TRAIN and tags["dag_run_id"] == auto_run["run_id"]
    assert tags["spec_hash"] and tags["code_version"]
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.source_type == "lakefs"
    assert f"lakefs://churn/{auto_run['commit']}/datasets/churn" in inputs[0].dataset.source


def test_parent_run_has_a_nested_run_per_trial(stack: Settings, auto_run: dict) -> None:
    client = mlflow_client(stack)
    parent = client.get_run(auto_run["trained"]["mlflow_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    families = {c.data.params["family"] for c in children}
    assert len(children) == 3
    assert families == {"linear", "random_forest", "hist_gradient_boosting"}
    assert all("cv_roc_auc" in c.data.metrics for c in children)
    assert "holdout_roc_auc" in parent.data.metrics
    # LocalExecutor: one trial task on this host, named in every trial and on the parent.
    workers = {c.data.tags["mlops.worker"] for c in children}
    assert workers == {f"local@{socket.gethostname()}"}, workers
    assert parent.data.tags["mlops.workers"] == workers.pop()


def test_version_is_registered_with_aliases_and_model_card(stack: Settings, auto_run: dict) -> None:
    client = mlflow_client(stack)
    version = str(auto_run["trained"]["version"])
    mv = client.get_model_version(PROJECT, version)
    assert mv.tags["gate_decision"] in ("promote", "reject")
    assert "holdout metrics" in mv.description.lower()
    assert auto_run["commit"] in mv.description
    assert auto_run["aliases"]["challenger"] == version
    if mv.tags["gate_decision"] == "promote":
        assert auto_run["aliases"]["champion"] == version


def test_lineage_shows_the_chain(stack: Settings, auto_run: dict) -> None:
    import json

    version = auto_run["trained"]["version"]
    proc = mlops_cli(stack, "lineage", PROJECT, "--version", str(version), "--json")
    assert proc.returncode == 0, proc.stderr
    chain = json.loads(proc.stdout)["chain"]
    assert len(chain) == 1
    link = chain[0]
    assert link["dataset"]["commit_id"] == auto_run["commit"]
    assert link["dataset"]["rows"] > 0 and link["dataset"]["rule_summary"].startswith("passed")
    assert link["training"]["mlflow_run_id"] == auto_run["trained"]["mlflow_run_id"]
    assert link["model_version"]["version"] == version
    assert link["decisions"][0]["decision"] in ("promote", "reject")


def test_losing_challenger_leaves_champion_and_records_why(
    stack: Settings, airflow: AirflowClient, auto_run: dict
) -> None:
    """Main moved but its data did not: the challenger only ties the champion."""
    client = mlflow_client(stack)
    champion_before = client.get_model_version_by_alias(PROJECT, "champion").version
    move_main(stack)
    run_id, state = airflow.run(TRAIN, timeout=900)
    assert state == "success"
    tis = airflow.task_states(TRAIN, run_id)
    assert tis["promote"] == "skipped"
    decision = xcom(airflow, TRAIN, run_id, "gate")
    assert decision["decision"] == "reject"
    assert "rule min_improvement on the holdout" in decision["reason"]
    assert "is not above the required" in decision["reason"]
    log = airflow.task_log_tail(TRAIN, run_id, "gate", 1, lines=60)
    assert "rule min_improvement" in log
    assert client.get_model_version_by_alias(PROJECT, "champion").version == champion_before
    mv = client.get_model_version(PROJECT, str(decision["version"]))
    assert mv.tags["gate_decision"] == "reject"
    assert mv.tags["gate_reason"] == decision["reason"]


def test_training_again_on_the_champions_commit_registers_nothing(
    stack: Settings, airflow: AirflowClient, auto_run: dict
) -> None:
    from mlops_lib.registry import champion_commit

    commit = champion_commit(PROJECT, stack)
    assert commit
    before = len(versions_of(stack, PROJECT))
    run_id, state = train_on_event(airflow, commit)
    assert state == "success"
    states = airflow.task_states(TRAIN, run_id)
    assert states["plan_search"] == "skipped" and states["train"] == "skipped", states
    assert states["gate"] == "skipped", states
    log = airflow.task_log_tail(TRAIN, run_id, "plan_search", 1, lines=60)
    assert "with the same spec and code: nothing new to train on" in log
    assert len(versions_of(stack, PROJECT)) == before


def test_retraining_same_commit_reproduces_metrics_and_predictions(
    stack: Settings, auto_run: dict
) -> None:
    import mlflow.sklearn
    import numpy as np

    from mlops_lib.datasets import holdout
    from mlops_lib.spec import project_spec

    again = train_again(stack, auto_run, "repro")
    assert again["holdout_metrics"] == auto_run["trained"]["holdout_metrics"]
    mlflow.set_tracking_uri(stack.mlflow_url)
    X = holdout(project_spec(PROJECT, stack), auto_run["commit"], stack).X
    first = mlflow.sklearn.load_model(auto_run["trained"]["model_uri"]).predict_proba(X)
    second = mlflow.sklearn.load_model(again["model_uri"]).predict_proba(X)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("few_rows", "fewer than training.min_rows=1000"),
        ("one_class", "has a single class [0]"),
        ("no_target", "target column 'churned' is missing"),
    ],
)
def test_untrainable_data_fails_naming_the_cause(stack: Settings, fault: str, message: str) -> None:
    import io

    from mlops_lib.datasets import TrainingError
    from mlops_lib.training import train

    df = demo_data.generate("clean", rows=5000, seed=301)
    if fault == "few_rows":
        df = df.head(50)
    elif fault == "one_class":
        df["churned"] = 0
    else:
        df = df.drop(columns=["churned"])
    branch = f"fault-{fault}-{time.time_ns()}"
    vc.fresh_branch(FAULTS_PROJECT, branch, settings=stack)
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    vc.upload(
        FAULTS_PROJECT,
        branch,
        f"datasets/{FAULTS_PROJECT}/date=2026-01-01/data.parquet",
        buf.getvalue(),
        settings=stack,
    )
    commit = vc.commit(FAULTS_PROJECT, branch, fault, {"fault": fault}, stack)
    before = len(versions_of(stack, FAULTS_PROJECT))
    with pytest.raises(TrainingError) as err:
        train(FAULTS_PROJECT, commit, dag_id="faults", run_id=fault, settings=stack)
    assert message in str(err.value)
    assert commit[:12] in str(err.value)
    assert len(versions_of(stack, FAULTS_PROJECT)) == before
    # Its MLflow run ends FAILED (no retry can fix the data), not left running.
    client = mlflow_client(stack)
    experiment = client.get_experiment_by_name(FAULTS_PROJECT).experiment_id
    (run,) = client.search_runs([experiment], f"tags.`mlops.run_key` = 'faults:{fault}'")
    assert run.info.status == "FAILED", run.info


def test_asset_event_naming_a_commit_off_main_is_refused_without_training(
    stack: Settings, airflow: AirflowClient, auto_run: dict
) -> None:
    branch = f"unpublished-{time.time_ns()}"
    vc.fresh_branch(PROJECT, branch, settings=stack)
    vc.upload(PROJECT, branch, f"datasets/{PROJECT}/date=2026-01-02/x.txt", b"x", settings=stack)
    off_main = vc.commit(PROJECT, branch, "never published", {}, stack)
    before = len(versions_of(stack, PROJECT))
    run_id, state = train_on_event(airflow, off_main)
    assert state == "failed"
    states = airflow.task_states(TRAIN, run_id)
    assert states["resolve_data"] == "failed" and states["train"] in ("upstream_failed", "none")
    log = airflow.task_log_tail(TRAIN, run_id, "resolve_data", 1, lines=60)
    assert f"asset event commit '{off_main}' is not on lakeFS 'main'" in log
    assert len(versions_of(stack, PROJECT)) == before
    # The failure is where users look: the MLOps page's data and `mlops lineage`.
    failure = page_projects(stack)[PROJECT]["last_failure"]
    assert failure["stage"] == "train" and failure["dag_run_id"] == run_id, failure
    assert failure["task_id"] == "resolve_data" and not failure["resolved"], failure
    assert failure["cause"].startswith("TrainingError: asset event commit"), failure
    assert failure["dag_run_url"].endswith(f"/dags/{TRAIN}/runs/{quote(run_id)}"), failure
    printed = " ".join(mlops_cli(stack, "lineage", PROJECT).stdout.split())
    assert f"last failure: train ({TRAIN} run {run_id}, task resolve_data)" in printed, printed


def page_projects(stack: Settings) -> dict[str, dict]:
    """The MLOps page's JSON, signed in as the platform's admin, by project name."""
    api = httpx.get(
        f"{stack.airflow_base_url}/mlops/api/projects",
        headers={"Authorization": f"Bearer {airflow_token(stack)}"},
        timeout=60,
    )
    assert api.status_code == 200, api.text
    return {p["project"]: p for p in api.json()}


def test_mlflow_down_mid_training_retries_without_duplicate_version(
    stack: Settings, airflow: AirflowClient, auto_run: dict
) -> None:
    move_main(stack)  # something to train on, whatever the champion was trained on
    run_id = airflow.trigger(TRAIN)
    airflow.wait_until(TRAIN, run_id, lambda states: states.get("search") == "running", timeout=300)
    # Inside the search: wait until its first trial is logged to MLflow.
    client, deadline = mlflow_client(stack), time.monotonic() + 300
    parent = f"tags.dag_run_id = '{run_id}'"
    while time.monotonic() < deadline:
        experiment = client.get_experiment_by_name(PROJECT)
        runs = client.search_runs([experiment.experiment_id], parent) if experiment else []
        trials = (
            client.search_runs(
                [experiment.experiment_id], f"tags.mlflow.parentRunId = '{runs[0].info.run_id}'"
            )
            if runs
            else []
        )
        if trials:
            break
        time.sleep(0.5)
    assert trials, "no trial of the training run was logged within the deadline"
    pid = {r["service"]: r["pid"] for r in platform_stack.status(stack)}["mlflow"]
    os.killpg(pid, signal.SIGKILL)
    states = airflow.wait_until(
        TRAIN,
        run_id,
        lambda states: states.get("search") in ("up_for_retry", "failed", "success"),
        timeout=600,
        poll=1,
    )
    assert states.get("search") == "up_for_retry", states
    platform_stack.up(stack, log=lambda _m: None)
    assert airflow.follow(TRAIN, run_id, timeout=900) == "success"
    key = f"{TRAIN}:{run_id}"
    mine = [mv for mv in versions_of(stack, PROJECT) if mv.tags.get("mlops.run_key") == key]
    assert len(mine) == 1
    # The retry went on with the same search: one parent run, its trials within the budget.
    experiment = client.get_experiment_by_name(PROJECT).experiment_id
    (parent,) = client.search_runs([experiment], f"tags.dag_run_id = '{run_id}'")
    nested = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    budget = project_spec(PROJECT, stack).training.budget.trials
    assert 1 <= len(nested) <= budget, (len(nested), budget)


def test_manual_approval_promotes_and_announces_the_champion(
    stack: Settings, airflow: AirflowClient, auto_run: dict
) -> None:
    import json

    from mlops_lib.lineage import lineage_store

    held = train_again(stack, auto_run, "approval")
    version = str(held["version"])
    client = mlflow_client(stack)
    # Not held by the gate: approval is refused and nothing moves.
    champion_before = client.get_model_version_by_alias(PROJECT, "champion").version
    proc = mlops_cli(stack, "model", "approve", PROJECT, version)
    assert proc.returncode == 1
    assert f"{PROJECT} v{version} is not awaiting approval" in proc.stderr
    assert client.get_model_version_by_alias(PROJECT, "champion").version == champion_before

    client.set_model_version_tag(PROJECT, version, "gate_decision", "awaiting_approval")
    proc = mlops_cli(stack, "model", "approve", PROJECT, version)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert client.get_model_version_by_alias(PROJECT, "champion").version == version
    chain = lineage_store(stack).chain(PROJECT, int(version))
    assert chain[0]["decisions"][-1]["decision"] == "approved"
    events = airflow.request(
        "GET", "/assets/events", params={"limit": 50, "order_by": "-timestamp"}
    ).json()["asset_events"]
    mine = [
        e
        for e in events
        if e["uri"] == "mlflow://models/churn/champion"
        and e["extra"].get("version") == int(version)
    ]
    assert mine, json.dumps(events)[:2000]


def test_reference_profile_is_kept_with_the_version(stack: Settings, auto_run: dict) -> None:
    """Monitoring's baseline: the holdout's profile in lakeFS and as an MLflow artifact."""
    from mlops_lib.layout import reference_path
    from mlops_lib.monitoring.reference import load_reference

    version = auto_run["trained"]["version"]
    mv = mlflow_client(stack).get_model_version(PROJECT, str(version))
    assert mv.tags["reference_profile"].endswith(reference_path(PROJECT, version))
    view = load_reference(PROJECT, version, stack)
    assert {"tenure_months", "contract", "prediction", "score"} <= set(view.get_columns())
    artifacts = mlflow_client(stack).list_artifacts(
        auto_run["trained"]["mlflow_run_id"], "monitoring"
    )
    assert [a.path for a in artifacts] == ["monitoring/reference_profile.bin"]


def test_train_retried_after_registering_finishes_the_work(
    stack: Settings, auto_run: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first try registered its version and then failed (lakeFS went away before the
    reference profile); the retry reuses that version and writes what was left undone."""
    from mlops_lib import training
    from mlops_lib.lineage import lineage_store

    def lakefs_gone(*_args, **_kwargs):
        raise ConnectionError("lakeFS went away")

    run = {"dag_id": "retry-test", "run_id": f"after-register-{time.time_ns()}"}
    monkeypatch.setattr(training, "_keep_reference", lakefs_gone)
    run["retrain_unchanged"] = True
    with pytest.raises(ConnectionError):
        training.train(PROJECT, auto_run["commit"], settings=stack, **run)
    key = f"{run['dag_id']}:{run['run_id']}"
    registered = [mv for mv in versions_of(stack, PROJECT) if mv.tags.get("mlops.run_key") == key]
    assert len(registered) == 1 and "reference_profile" not in registered[0].tags
    version = int(registered[0].version)
    assert lineage_store(stack).chain(PROJECT, version) == []

    monkeypatch.undo()
    again = training.train(PROJECT, auto_run["commit"], settings=stack, **run)
    assert again["version"] == version and again["commit"] == auto_run["commit"]
    mine = [mv for mv in versions_of(stack, PROJECT) if mv.tags.get("mlops.run_key") == key]
    assert len(mine) == 1
    assert mine[0].tags["reference_profile"].endswith(f"reference/v{version}/profile.bin")
    assert set(again["holdout_metrics"]) >= {"roc_auc", "accuracy"}
    chain = lineage_store(stack).chain(PROJECT, version)
    assert len(chain) == 1 and chain[0]["training"]["mlflow_run_id"] == again["mlflow_run_id"]
