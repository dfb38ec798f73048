"""The stack on the PostgreSQL backend in Celery mode: a real cluster, Airflow and MLflow on
it, Redis from Debian's package as the broker and two Celery workers that run the tasks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
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
from mlops_lib.stack.procs import ManagedProcess

from . import conftest
from .conftest import stack_settings, wait_for, world_traversable_tmpdir

pytestmark = pytest.mark.integration
WORKERS, TRIALS = 2, 8


def parallel_projects(folder: Path) -> Path:
    """The test projects, churn searching in two trial tasks at once and served by two
    replicas."""
    import yaml

    projects = conftest.test_projects(folder)
    churn = yaml.safe_load((projects / "churn.yaml").read_text())
    churn["training"].update(parallel=WORKERS, budget={"trials": TRIALS, "seconds": 900})
    churn["serving"] = dict(churn.get("serving") or {}, replicas=2)
    (projects / "churn.yaml").write_text(yaml.safe_dump(churn))
    return projects


@pytest.fixture(scope="module")
def pg_stack() -> Iterator[Settings]:
    folder = world_traversable_tmpdir("mlops-pg-stack-")
    settings = stack_settings(
        folder / "stack",
        projects_dir=parallel_projects(folder / "projects"),
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
    for ti in client.task_instances("platform_check", run_id):
        assert ti["queue"] == "default", ti
        workers = ran_on(pg_stack, ti["task_id"], run_id)
        assert len(workers) == 1, (ti["task_id"], workers)  # one worker executed it


def ran_on(settings: Settings, task_id: str, run_id: str) -> list[str]:
    """The workers whose log shows they executed the task of the run (on one line: a log
    holds the tasks of other runs too)."""
    return [
        name
        for name in worker_names(settings)
        if any(
            f"task_id='{task_id}'" in line and run_id in line
            for line in worker_log(settings, name).splitlines()
        )
    ]


def celery_name(name: str) -> str:
    """A worker's Celery name, as MLflow's trial runs record it."""
    return f"{name}@{socket.gethostname()}"


def ingest_batch(settings: Settings, folder: Path, seed: int) -> None:
    from mlops_lib import demo_data
    from mlops_lib.ingest import ingest_now

    batch = demo_data.write(demo_data.generate("clean", rows=3000, seed=seed), folder / "b.pq")
    ingest_now("churn", source=str(batch), settings=settings)


def test_the_loop_on_two_workers_survives_one_killed_mid_search_and_serves_two_replicas(
    pg_stack: Settings, tmp_path: Path
) -> None:
    """ingest -> train -> deploy, every task on a Celery worker: one search's trials run on
    both workers, each named in MLflow; one worker SIGKILLed mid-search has its trial task
    retried on the other and the run succeeds within the budget; the champion is served by
    two replicas behind the gateway."""
    from mlops_lib.tracking import connect

    ingest_batch(pg_stack, tmp_path, seed=60)
    airflow = AirflowClient.from_settings(pg_stack)
    airflow.prepare("churn__train", timeout=180)
    run_id = airflow.trigger("churn__train")
    client = connect(pg_stack)
    victim = worker_names(pg_stack)[0]

    def trial_runs() -> list:
        experiment = client.get_experiment_by_name("churn")
        if experiment is None:  # the first training has not opened its search yet
            return []
        parents = client.search_runs([experiment.experiment_id], f"tags.dag_run_id = '{run_id}'")
        if not parents:
            return []
        nested = f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'"
        return client.search_runs([experiment.experiment_id], nested)

    def victim_logged_a_trial_while_both_search() -> bool:
        tis = airflow.task_instances("churn__train", run_id)
        running = [t for t in tis if t["task_id"] == "search" and t["state"] == "running"]
        tags = {t.data.tags.get("mlops.worker") for t in trial_runs()}
        return len(running) == WORKERS and celery_name(victim) in tags

    wait_for(
        victim_logged_a_trial_while_both_search, "a trial of each worker", timeout=300, poll=0.5
    )
    pids = {r["service"]: r["pid"] for r in platform_stack.status(pg_stack)}
    os.killpg(pids[victim], signal.SIGKILL)  # the worker and the trials it runs
    try:
        assert airflow.follow("churn__train", run_id, timeout=600) == "success"
    finally:
        platform_stack.up(pg_stack, log=print)  # the killed worker comes back
    tis = airflow.task_instances("churn__train", run_id)
    searches = [t for t in tis if t["task_id"] == "search"]
    assert sorted(t["map_index"] for t in searches) == list(range(WORKERS)), searches
    assert {t["queue"] for t in searches} == {"training"}
    assert [t["try_number"] for t in searches if t["try_number"] > 1] == [2], searches
    trials = trial_runs()
    # The killed trial never finished: the budget holds, counted across both tasks.
    numbers = sorted(int(t.info.run_name.split("-")[1]) for t in trials)
    assert len(numbers) == len(set(numbers)) and numbers[-1] < TRIALS, numbers
    workers = {t.data.tags["mlops.worker"] for t in trials}
    assert workers == {celery_name(name) for name in worker_names(pg_stack)}, workers
    (parent,) = client.search_runs([trials[0].info.experiment_id], f"tags.dag_run_id = '{run_id}'")
    assert parent.data.tags["mlops.trial_tasks"] == str(WORKERS)
    deployed_on_two_replicas(pg_stack, airflow)


def deployed_on_two_replicas(settings: Settings, airflow: AirflowClient) -> None:
    import httpx

    from mlops_lib import demo_data

    airflow.prepare("churn__deploy", timeout=180)
    run_id = airflow.trigger("churn__deploy")
    assert airflow.follow("churn__deploy", run_id, timeout=600) == "success"
    served = {
        r["service"]: r
        for r in platform_stack.status(settings)
        if r["service"].startswith("serving/churn")
    }
    assert sorted(served) == ["serving/churn", "serving/churn#1"], served
    assert {r["state"] for r in served.values()} == {"healthy"}, served
    from mlops_lib.spec import project_spec

    features = project_spec("churn", settings).features
    frame = demo_data.generate("clean", rows=3, seed=62)[features]
    instances = json.loads(frame.to_json(orient="records", date_format="iso"))
    answer = httpx.post(
        f"{settings.serving_base_url}/churn/predict", json={"instances": instances}, timeout=30
    )
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 3, answer.text


def test_work_queued_while_the_workers_are_away_survives_a_redis_restart(
    pg_stack: Settings,
) -> None:
    airflow = AirflowClient.from_settings(pg_stack)
    airflow.prepare("platform_check")
    for name in worker_names(pg_stack):
        process(pg_stack, name).stop()
    run_id = airflow.trigger("platform_check")
    try:
        # The scheduler hands the first task to Celery: it waits in Redis, no worker takes it.
        wait_for(
            lambda: queued_messages(pg_stack) > 0,
            "a task message waiting in Redis's default queue",
            timeout=120,
            poll=0.5,
        )
        waiting = queued_messages(pg_stack)
        print(process(pg_stack, "redis").stop())  # Redis restarts from its append-only journal
        assert not redis.healthy(pg_stack)
    finally:
        platform_stack.up(pg_stack, log=print)  # Redis, then the workers
    assert queued_messages(pg_stack) in (0, waiting)  # as journalled, or already taken
    assert airflow.follow("platform_check", run_id, timeout=300) == "success"


def queued_messages(settings: Settings) -> int:
    """Messages waiting in the broker's default queue (Redis ``LLEN``)."""
    reply = redis.request(settings, "LLEN", "default")
    assert reply.startswith(":"), reply
    return int(reply[1:])


def process(settings: Settings, service: str) -> ManagedProcess:
    return ManagedProcess(service, settings.stack_dir / "run", settings.stack_dir / "logs")
