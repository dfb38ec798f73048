"""A stage failure's one-line cause (secrets masked) and its record in the lineage store."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import SecretStr

from mlops_lib.lineage import lineage_store, record_stage_failure
from mlops_lib.lineage.failures import CAUSE_LIMIT, one_line_cause, stage_of
from mlops_lib.settings import Settings, load_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(stack_dir=tmp_path, lineage_db_url=f"sqlite:///{tmp_path}/l.db")


def test_the_cause_is_the_error_class_and_the_first_line_of_its_message() -> None:
    error = ValueError("fewer rows than 100 at commit abc\n  Traceback-like detail")
    assert one_line_cause(error) == "ValueError: fewer rows than 100 at commit abc"
    assert one_line_cause(KeyError()) == "KeyError"
    assert one_line_cause(None) == "unknown error"
    assert one_line_cause("Task was killed externally\nmore") == "Task was killed externally"


def test_a_wrapper_that_repeats_its_cause_names_the_cause() -> None:
    class TaskFailed(Exception):
        pass

    try:
        try:
            raise LookupError("no commit 'x' on lakeFS 'main'")
        except LookupError as exc:
            raise TaskFailed(str(exc)) from exc
    except TaskFailed as wrapped:
        assert one_line_cause(wrapped) == "LookupError: no commit 'x' on lakeFS 'main'"


def test_the_cause_is_trimmed() -> None:
    cause = one_line_cause(RuntimeError("x" * 1000))
    assert len(cause) == CAUSE_LIMIT and cause.endswith("…")


@pytest.mark.parametrize(
    ("message", "secret"),
    [
        ("cannot connect to postgresql+psycopg2://mlops:s3cr3t-pw@db:5432/mlops", "s3cr3t-pw"),
        ("login failed: password=hunter2 for user x", "hunter2"),
        ('bad answer {"token": "eyJhbGciOi.abc"}', "eyJhbGciOi.abc"),
        ("401 with header Authorization: Bearer abcdef123456", "abcdef123456"),
        ("access key AKIAJ4EXAMPLEKEY1234 refused", "AKIAJ4EXAMPLEKEY1234"),
        ("lakeFS said secret_access_key: wJalrXUtnFEMI/K7MDENG", "wJalrXUtnFEMI/K7MDENG"),
    ],
)
def test_secret_looking_values_never_reach_the_cause(message: str, secret: str) -> None:
    cause = one_line_cause(RuntimeError(message))
    assert secret not in cause and "***" in cause and cause.startswith("RuntimeError: ")


def test_the_values_of_secret_settings_are_masked() -> None:
    cause = one_line_cause(RuntimeError("rejected key Zx9-plain-value"), ["Zx9-plain-value"])
    assert cause == "RuntimeError: rejected key ***"


def test_the_stage_is_what_follows_the_project_in_the_dag_id() -> None:
    assert stage_of("churn", "churn__train") == "train"
    assert stage_of("churn", "churn__continuous_training") == "continuous_training"
    assert stage_of("platform", "platform_check") is None
    assert stage_of("churn", "fraud__train") is None and stage_of("churn", "churn__") is None


def test_a_stage_failure_is_recorded_with_its_cause_and_time(settings: Settings) -> None:
    when = datetime(2026, 11, 27, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    row = record_stage_failure(
        "churn",
        dag_id="churn__train",
        dag_run_id="manual__2026-11-27T10:00:00+00:00",
        task_id="train",
        error=ValueError("single class in target 'churned'"),
        try_number=3,
        failed_at=when,
        settings=settings,
    )
    assert row is not None
    last = lineage_store(settings).last_failure("churn")
    assert last is not None and last["id"] == row["id"] and last["resolved"] is False
    assert (last["stage"], last["cause"]) == (
        "train",
        "ValueError: single class in target 'churned'",
    )
    assert last["failed_at"].startswith("2026-11-27T10:00:00")  # stored in UTC


def test_a_configured_secret_in_the_error_is_not_recorded(tmp_path: Path) -> None:
    settings = load_settings(
        stack_dir=tmp_path,
        lineage_db_url=f"sqlite:///{tmp_path}/l.db",
        postgres_password=SecretStr("pg-Secret-77"),
    )
    error = RuntimeError("auth failed for pg-Secret-77")
    args = {"dag_id": "churn__ingest", "dag_run_id": "r", "task_id": "publish", "error": error}
    row = record_stage_failure("churn", **args, settings=settings)
    assert row is not None and "pg-Secret-77" not in row["cause"]


def test_a_dag_that_is_not_the_projects_is_not_recorded(settings: Settings) -> None:
    args = {"dag_run_id": "r", "task_id": "check_lakefs", "error": RuntimeError("down")}
    assert record_stage_failure("platform", dag_id="platform_check", **args) is None
    assert record_stage_failure("churn", dag_id="platform_check", **args, settings=settings) is None
    assert lineage_store(settings).failures("churn") == []
