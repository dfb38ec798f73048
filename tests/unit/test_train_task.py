"""The training DAG's tasks without a running Airflow: a deterministic failure (untrainable
data, a search whose every trial failed, a commit not on main) fails its task at once with
``AirflowFailException``, which Airflow never retries; anything else is left to the retries
of the spec. The task callables are taken from the DAG the factory builds and called as the
task runner calls them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

import mlops_lib.training
from mlops_lib.automl import SearchFailed
from mlops_lib.datasets import TrainingError
from mlops_lib.spec import load_spec

from .test_spec import CHURN

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dag():
    """``churn__train`` as the DAG factory builds it."""
    found = importlib.util.spec_from_file_location(
        "mlops_projects_under_test", REPO / "dags" / "mlops_projects.py"
    )
    factory = importlib.util.module_from_spec(found)
    found.loader.exec_module(factory)
    return factory.build_train(load_spec(CHURN))


def _train_task(dag, monkeypatch: pytest.MonkeyPatch, error: Exception):
    """The train task's callable, with training raising ``error``, and what training got."""
    called: dict = {}

    def train(project: str, commit: str, **kw) -> dict:
        called.update(kw, project=project, commit=commit)
        raise error

    monkeypatch.setattr(mlops_lib.training, "train", train)
    run = SimpleNamespace(dag_id="churn__train", run_type="manual")
    task = dag.task_dict["train"].python_callable
    return lambda: task("c0ffee", None, dag_run=run, run_id="manual__1"), called


@pytest.mark.parametrize(
    "error",
    [
        TrainingError("12 labelled rows at lakeFS churn@c0ffee, fewer than training.min_rows=1000"),
        SearchFailed("every AutoML trial failed on f1: linear: ValueError: bad input"),
    ],
    ids=["untrainable_data", "every_trial_failed"],
)
def test_a_deterministic_training_failure_fails_the_train_task_without_retries(
    dag, monkeypatch: pytest.MonkeyPatch, error: TrainingError
) -> None:
    assert dag.task_dict["train"].retries == 2  # the spec's: what any other error gets
    train, _ = _train_task(dag, monkeypatch, error)
    with pytest.raises(AirflowFailException) as failed:
        train()
    assert str(failed.value) == str(error) and failed.value.__cause__ is error


def test_a_transient_training_failure_is_left_to_the_retries(
    dag, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = ConnectionError("MLflow at http://127.0.0.1:5000 refused the connection")
    train, called = _train_task(dag, monkeypatch, refused)
    with pytest.raises(ConnectionError) as failed:
        train()
    assert failed.value is refused  # raised as is: the task is retried
    assert called == {
        "project": "churn",
        "commit": "c0ffee",
        "dag_id": "churn__train",
        "run_id": "manual__1",
        "trigger": "manual",
        "extra_tags": None,
    }


def test_training_again_on_the_champion_commit_skips_the_train_task(
    dag, monkeypatch: pytest.MonkeyPatch
) -> None:
    nothing = mlops_lib.training.NothingToTrain("the champion was trained on c0ffee already")
    train, _ = _train_task(dag, monkeypatch, nothing)
    with pytest.raises(AirflowSkipException, match="trained on c0ffee already"):
        train()


def test_a_commit_that_is_not_on_main_fails_resolve_data_without_retries(
    dag, monkeypatch: pytest.MonkeyPatch
) -> None:
    def resolve_commit(project: str, extra: dict | None) -> str:
        raise TrainingError(f"commit {extra['commit']} is not in the history of main")

    monkeypatch.setattr(mlops_lib.training, "resolve_commit", resolve_commit)
    event = SimpleNamespace(timestamp=1, extra={"commit": "0ddba11"})
    resolve = dag.task_dict["resolve_data"].python_callable
    with pytest.raises(AirflowFailException, match="0ddba11 is not in the history of main"):
        resolve(triggering_asset_events={"churn_dataset": [event]})
