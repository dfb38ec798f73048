"""The stack on the PostgreSQL backend: a real cluster, Airflow and MLflow on it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from mlops_lib import platform_stack
from mlops_lib.airflow_api import AirflowClient
from mlops_lib.settings import Settings, reload_settings
from mlops_lib.stack.postgres import connect

from .conftest import stack_settings, world_traversable_tmpdir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pg_stack() -> Iterator[Settings]:
    folder = world_traversable_tmpdir("mlops-pg-stack-")
    settings = stack_settings(folder / "stack", backend="postgres")
    try:
        platform_stack.up(settings, log=print)
        settings = reload_settings(settings)
        yield settings
    finally:
        platform_stack.down(settings, log=print)
        shutil.rmtree(folder, ignore_errors=True)


def test_every_service_healthy_on_postgres(pg_stack: Settings) -> None:
    rows = {r["service"]: r for r in platform_stack.status(pg_stack)}
    assert "postgres" in rows
    assert all(r["state"] == "healthy" for r in rows.values()), rows


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


def test_platform_check_dag_runs_on_postgres(pg_stack: Settings) -> None:
    client = AirflowClient.from_settings(pg_stack)
    client.prepare("platform_check")
    _, state = client.run("platform_check", timeout=300)
    assert state == "success"
