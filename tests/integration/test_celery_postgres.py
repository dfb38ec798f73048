"""The stack on the PostgreSQL backend in Celery mode: a real cluster, Airflow and MLflow on
it, Redis from Debian's package as the broker and two Celery workers that run the tasks."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mlops_lib import platform_stack
from mlops_lib.airflow_api import AirflowClient
from mlops_lib.settings import Settings, reload_settings
from mlops_lib.stack import redis
from mlops_lib.stack.manager import worker_names
from mlops_lib.stack.postgres import connect

from .conftest import stack_settings, world_traversable_tmpdir

pytestmark = pytest.mark.integration
WORKERS = 2


@pytest.fixture(scope="module")
def pg_stack() -> Iterator[Settings]:
    folder = world_traversable_tmpdir("mlops-pg-stack-")
    settings = stack_settings(
        folder / "stack",
        backend="postgres",
        executor="celery",
        celery_workers=WORKERS,
        # A killed worker's task is failed (and retried) after this many silent seconds.
        airflow_task_heartbeat_timeout=30,
    )
    try:
        platform_stack.up(settings, log=print)
        settings = reload_settings(settings)
        yield settings
    finally:
        platform_stack.down(settings, log=print)
        left = [p.name for p in (settings.stack_dir / "run").glob("*.pid")]
        shutil.rmtree(folder, ignore_errors=True)
        assert not left, f"pid files left after down: {left}"


def test_every_service_healthy_with_redis_and_each_worker(pg_stack: Settings) -> None:
    rows = {r["service"]: r for r in platform_stack.status(pg_stack)}
    assert {"postgres", "redis", *worker_names(pg_stack)} <= set(rows)
    assert len(worker_names(pg_stack)) == WORKERS
    assert all(r["state"] == "healthy" for r in rows.values()), rows


def test_redis_listens_on_localhost_and_answers_only_with_its_password(pg_stack: Settings) -> None:
    assert redis.ping(pg_stack) == "+PONG"
    assert redis.ping(pg_stack, password="").startswith("-NOAUTH")
    assert redis.ping(pg_stack, password="wrong").startswith("-WRONGPASS")
    config = redis.config_file(pg_stack)
    assert f"bind {pg_stack.host}\n" in config.read_text()
    assert oct(config.stat().st_mode & 0o777) == "0o600"


def test_no_secret_is_on_a_command_line(pg_stack: Settings) -> None:
    """The broker password reaches Redis in its private file, Airflow in its environment."""
    secret = pg_stack.secret("redis_password")
    for proc in psutil.process_iter(["cmdline"]):
        assert secret not in " ".join(proc.info["cmdline"] or []), proc.info["cmdline"]


def test_airflow_and_mlflow_use_their_postgres_databases(pg_stack: Settings) -> None:
    for dbname, table in (
        (pg_stack.postgres_airflow_db, "dag_run"),
        (pg_stack.postgres_mlflow_db, "experiments"),
    ):
        conn = connect(pg_stack, dbname)
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = %s", (table,)
            )
            assert cur.fetchone()[0] == 1, (dbname, table)
        conn.close()


def worker_log(settings: Settings, name: str) -> str:
    return (settings.stack_dir / "logs" / f"{name}.log").read_text(errors="replace")


def test_tasks_run_on_the_celery_workers(pg_stack: Settings) -> None:
    client = AirflowClient.from_settings(pg_stack)
    client.prepare("platform_check")
    run_id, state = client.run("platform_check", timeout=300)
    assert state == "success"
    logs = {name: worker_log(pg_stack, name) for name in worker_names(pg_stack)}
    for ti in client.task_instances("platform_check", run_id):
        assert ti["queue"] == "default", ti
        ran_on = [
            name
            for name, text in logs.items()
            if f"task_id='{ti['task_id']}'" in text and run_id in text
        ]
        assert len(ran_on) == 1, (ti["task_id"], ran_on)  # one worker executed it


def ran_on(settings: Settings, task_id: str, run_id: str) -> list[str]:
    """The workers whose log shows they executed the task of the run."""
    return [
        name
        for name in worker_names(settings)
        if f"task_id='{task_id}'" in worker_log(settings, name)
        and run_id in worker_log(settings, name)
    ]


def test_a_worker_killed_mid_training_has_the_task_retried_on_the_other_one(
    pg_stack: Settings, tmp_path: Path
) -> None:
    from mlops_lib import demo_data
    from mlops_lib.ingest import ingest_now

    source = demo_data.write(demo_data.generate("clean", rows=3000, seed=61), tmp_path / "b.pq")
    ingest_now("churn", source=str(source), settings=pg_stack)
    airflow = AirflowClient.from_settings(pg_stack)
    airflow.prepare("churn__train", timeout=180)
    run_id = airflow.trigger("churn__train")
    airflow.wait_until(
        "churn__train", run_id, lambda s: s.get("train") == "running", timeout=300, poll=1
    )
    (victim,) = ran_on(pg_stack, "train", run_id)
    pids = {r["service"]: r["pid"] for r in platform_stack.status(pg_stack)}
    os.killpg(pids[victim], signal.SIGKILL)  # the worker and the task it runs
    try:
        assert airflow.follow("churn__train", run_id, timeout=600) == "success"
        train = next(
            t for t in airflow.task_instances("churn__train", run_id) if t["task_id"] == "train"
        )
        assert train["try_number"] == 2 and train["queue"] == "training", train
        assert set(ran_on(pg_stack, "train", run_id)) == set(worker_names(pg_stack))
    finally:
        platform_stack.up(pg_stack, log=print)  # the killed worker comes back
