"""Versioned ingestion through the real Airflow scheduler into the real lakeFS."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from mlops_lib import demo_data, layout, platform_stack
from mlops_lib import versioning as vc
from mlops_lib.airflow_api import AirflowClient
from mlops_lib.settings import Settings

from .conftest import PUBLISH_PROJECT

pytestmark = pytest.mark.integration

PROJECT = "churn"
DAG_ID = f"{PROJECT}__ingest"


@pytest.fixture(scope="module")
def airflow(stack: Settings) -> AirflowClient:
    client = AirflowClient.from_settings(stack)
    client.prepare(DAG_ID, timeout=180)
    return client


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("batches")
    demo_data.write(demo_data.generate("clean", seed=101), folder / "clean.parquet")
    demo_data.write(demo_data.generate("clean", seed=102), folder / "clean-2.csv")
    for fault in ("missing_column", "wrong_type", "nulls", "out_of_range", "duplicate_keys"):
        demo_data.write(demo_data.generate(fault, seed=103, rows=5000), folder / f"{fault}.csv")
    (folder / "empty.csv").write_bytes(b"")
    (folder / "unreadable.parquet").write_bytes(b"\x00garbage, not parquet")
    return folder


def run(client: AirflowClient, source: str) -> tuple[str, str]:
    run_id, state = client.run(DAG_ID, {"source": source}, timeout=600)
    return state, run_id


def failed_log(client: AirflowClient, run_id: str) -> str:
    for ti in client.task_instances(DAG_ID, run_id):
        if ti["state"] == "failed":
            return client.task_log_tail(DAG_ID, run_id, ti["task_id"], ti["try_number"], lines=200)
    raise AssertionError("no failed task")


@pytest.fixture(scope="module")
def accepted(stack: Settings, airflow: AirflowClient, batches: Path) -> dict:
    """A clean batch ingested through the DAG (everything below builds on it)."""
    state, run_id = run(airflow, str(batches / "clean.parquet"))
    assert state == "success"
    return {"run_id": run_id, "head": vc.head(PROJECT, settings=stack)}


def test_clean_batch_lands_on_main(stack: Settings, airflow: AirflowClient, accepted: dict) -> None:
    # The merge commit's parent carries the ingest metadata; read it from the branch commit.
    commits = list(vc.repository(PROJECT, stack).ref("main").log(max_amount=100))
    ingest_commit = next(c for c in commits if c.metadata.get("run_id") == accepted["run_id"])
    meta = ingest_commit.metadata
    assert meta["rows"] == "50000"
    assert meta["dag_id"] == DAG_ID and meta["passed"] == "True"
    assert meta["rules"].startswith("passed:")
    assert meta["schema_hash"] and meta["source"].endswith("clean.parquet")
    part = meta["partition"]
    paths = vc.list_paths(PROJECT, "main", part + "/", stack)
    assert {p.rsplit("/", 1)[1] for p in paths} == {
        "data.parquet",
        "_validation.json",
        "_profile.bin",
    }
    branch = layout.ingest_branch_name(accepted["run_id"])
    assert not vc.branch_exists(PROJECT, branch, stack), "merged branch should be deleted"


def test_asset_event_carries_the_commit_id(airflow: AirflowClient, accepted: dict) -> None:
    events = airflow.request(
        "GET", "/assets/events", params={"source_run_id": accepted["run_id"]}
    ).json()["asset_events"]
    assert len(events) == 1
    assert events[0]["uri"] == "lakefs://churn/main/datasets/churn"
    assert events[0]["extra"]["commit_id"] == accepted["head"]
    assert events[0]["extra"]["rows"] == 50000


@pytest.mark.parametrize(
    ("batch", "expected"),
    [
        ("missing_column.csv", "BLOCKING required_columns [support_calls]: column is missing"),
        ("wrong_type.csv", "BLOCKING types [total_charges]: expected float"),
        ("nulls.csv", "BLOCKING max_null_fraction [monthly_charges]: null fraction"),
        ("out_of_range.csv", "BLOCKING ranges [age]: values outside [18.0, 100.0]"),
        ("duplicate_keys.csv", "BLOCKING unique_key [customer_id]: duplicate keys"),
        ("empty.csv", "is empty (0 bytes)"),
        ("unreadable.parquet", "cannot read"),
        ("no-such-file.csv", "matched no files"),
    ],
)
def test_bad_batch_is_rejected_and_main_unchanged(
    stack: Settings,
    airflow: AirflowClient,
    accepted: dict,
    batches: Path,
    batch: str,
    expected: str,
) -> None:
    head_before = vc.head(PROJECT, settings=stack)
    state, run_id = run(airflow, str(batches / batch))
    assert state == "failed"
    assert vc.head(PROJECT, settings=stack) == head_before
    log = failed_log(airflow, run_id)
    assert "rejected" in log and expected in log, log
    branch = layout.ingest_branch_name(run_id)
    assert vc.branch_exists(PROJECT, branch, stack), "rejected branch is kept for inspection"
    report_path = next(
        p
        for p in vc.list_paths(PROJECT, branch, "datasets/churn/", stack)
        if p.endswith("_validation.json")
    )
    report = json.loads(vc.read(PROJECT, branch, report_path, stack))
    assert report["passed"] is False and report["violations"]
    # Only one try: bad data is not retried.
    tis = {ti["task_id"]: ti for ti in airflow.task_instances(DAG_ID, run_id)}
    assert tis["publish"]["try_number"] == 1


@pytest.mark.parametrize("source", ["/etc/passwd", "/**", "/etc/*.conf"])
def test_a_source_outside_the_data_roots_is_refused_and_nothing_read(
    stack: Settings, airflow: AirflowClient, accepted: dict, source: str
) -> None:
    head_before = vc.head(PROJECT, settings=stack)
    state, run_id = run(airflow, source)
    assert state == "failed"
    assert vc.head(PROJECT, settings=stack) == head_before
    log = failed_log(airflow, run_id)
    assert "outside the data roots" in log, log
    branch = layout.ingest_branch_name(run_id)
    stored = vc.list_paths(PROJECT, branch, "datasets/churn/", stack)
    assert not [p for p in stored if p.endswith("data.parquet") and p not in accepted_data(stack)]


def accepted_data(stack: Settings) -> set[str]:
    """The data files already on main (a rejected branch starts from them)."""
    return {p for p in vc.list_paths(PROJECT, "main", "datasets/churn/", stack)}


def test_corrupted_batch_lists_every_violation(
    stack: Settings, airflow: AirflowClient, accepted: dict, tmp_path: Path, alerts: list[dict]
) -> None:
    path = demo_data.write(demo_data.generate("corrupted", rows=5000), tmp_path / "c.csv")
    head_before = vc.head(PROJECT, settings=stack)
    state, run_id = run(airflow, str(path))
    assert state == "failed"
    assert vc.head(PROJECT, settings=stack) == head_before
    log = failed_log(airflow, run_id)
    for rule in (
        "required_columns",
        "types",
        "ranges",
        "allowed_values",
        "max_null_fraction",
        "unique_key",
    ):
        assert f"BLOCKING {rule}" in log, rule
    # The failure callback logged it and posted it to the alerts webhook.
    assert f"MLOps alert: {DAG_ID}/{run_id} task publish (try 1) failed" in log
    mine = [a for a in alerts if a["run_id"] == run_id]
    assert mine and mine[0]["task_id"] == "publish" and mine[0]["project"] == PROJECT, alerts
    assert "rejected" in mine[0]["error"]


def test_same_logical_date_replaces_its_partition(
    stack: Settings, airflow: AirflowClient, accepted: dict, batches: Path
) -> None:
    state, _ = run(airflow, str(batches / "clean-2.csv"))
    assert state == "success"
    from mlops_lib.datasets import read_dataset

    df = read_dataset(PROJECT, settings=stack)
    # Both runs fall on the same day: the second replaced the first, no duplicated rows.
    assert len(df) == 50_000
    assert df["customer_id"].str.startswith("C0102").all()


def test_lakefs_down_mid_run_fails_then_retry_succeeds(
    stack: Settings, airflow: AirflowClient, accepted: dict, batches: Path
) -> None:
    head_before = vc.head(PROJECT, settings=stack)
    run_id = airflow.trigger(DAG_ID, {"source": str(batches / "clean.parquet")})
    airflow.wait_until(
        DAG_ID, run_id, lambda states: states.get("open_branch") == "success", timeout=120
    )
    lakefs_pid = {r["service"]: r["pid"] for r in platform_stack.status(stack)}["lakefs"]
    os.killpg(lakefs_pid, signal.SIGKILL)
    # The running task fails and is scheduled for a retry.
    states = airflow.wait_until(
        DAG_ID, run_id, lambda states: "up_for_retry" in states.values(), timeout=180
    )
    assert "up_for_retry" in states.values(), states
    platform_stack.up(stack, log=lambda _m: None)
    assert vc.head(PROJECT, settings=stack) == head_before, "nothing partial reached main"
    assert airflow.follow(DAG_ID, run_id, timeout=600) == "success"
    tis = {ti["task_id"]: ti for ti in airflow.task_instances(DAG_ID, run_id)}
    assert max(ti["try_number"] for ti in tis.values()) >= 2
    assert vc.head(PROJECT, settings=stack) != head_before


def test_publish_retried_after_its_merge_finishes_the_work(stack: Settings, batches: Path) -> None:
    """The first try merged (and deleted the branch) and then failed; the retry records and
    returns that merge instead of failing, and main gets no second merge."""
    from mlops_lib.ingest import ingest_batch, open_branch, publish
    from mlops_lib.lineage import lineage_store

    project = PUBLISH_PROJECT
    opened = open_branch(project, "retry-after-merge", stack)
    landed = ingest_batch(
        project,
        opened["branch"],
        day="2026-03-01",
        run_id="retry-after-merge",
        dag_id="(test)",
        source=str(batches / "clean.parquet"),
        settings=stack,
    )
    first = publish(project, landed, stack)
    again = publish(project, landed, stack)
    assert again == first
    assert vc.head(project, settings=stack) == first["commit_id"]
    assert not vc.branch_exists(project, opened["branch"], stack)
    rows = [
        d for d in lineage_store(stack).datasets(project) if d["commit_id"] == first["commit_id"]
    ]
    assert len(rows) == 1
