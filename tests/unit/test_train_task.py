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

from .specs import churn_spec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dag():
    """``churn__train`` as the DAG factory builds it."""
    found = importlib.util.spec_from_file_location(
        "mlops_projects_under_test", REPO / "dags" / "mlops_projects.py"
    )
    factory = importlib.util.module_from_spec(found)
    found.loader.exec_module(factory)
    return factory.build_train(churn_spec())


RUN = SimpleNamespace(dag_id="churn__train", run_type="manual")
PLAN = {"project": "churn", "commit": "c0ffee", "study": "churn.r1", "registered": None}


def _failing(monkeypatch: pytest.MonkeyPatch, function: str, error: Exception) -> dict:
    """Make a training step raise ``error``; returns what the step was called with."""
    called: dict = {}

    def step(*args, **kw) -> dict:
        called.update(kw, args=args)
        raise error

    monkeypatch.setattr(mlops_lib.training, function, step)
    return called


@pytest.mark.parametrize(
    ("task_id", "function", "error"),
    [
        (
            "search",
            "search_trials",
            TrainingError("12 labelled rows at lakeFS churn@c0ffee, fewer than min_rows=1000"),
        ),
        (
            "train",
            "finish_training",
            SearchFailed("every AutoML trial failed on f1: linear: ValueError: bad input"),
        ),
    ],
    ids=["untrainable_data", "every_trial_failed"],
)
def test_a_deterministic_training_failure_fails_its_task_without_retries(
    dag, monkeypatch: pytest.MonkeyPatch, task_id: str, function: str, error: Exception
) -> None:
    task = dag.task_dict[task_id]
    assert task.retries == 2  # the spec's: what any other error gets
    _failing(monkeypatch, function, error)
    monkeypatch.setattr("airflow.sdk.get_current_context", dict)
    args = {"search": {"plan": PLAN, "shard": 0}, "train": {"plan": PLAN, "searched": []}}
    with pytest.raises(AirflowFailException) as failed:
        task.python_callable(**args[task_id])
    assert str(failed.value) == str(error) and failed.value.__cause__ is error


def test_a_transient_failure_opening_the_search_is_left_to_the_retries(
    dag, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = ConnectionError("MLflow at http://127.0.0.1:5000 refused the connection")
    called = _failing(monkeypatch, "open_search", refused)
    plan = dag.task_dict["plan_search"].python_callable
    with pytest.raises(ConnectionError) as failed:
        plan("c0ffee", None, dag_run=RUN, run_id="manual__1")
    assert failed.value is refused  # raised as is: the task is retried
    assert called == {
        "args": ("churn", "c0ffee"),
        "dag_id": "churn__train",
        "run_id": "manual__1",
        "trigger": "manual",
        "extra_tags": None,
    }


def test_trials_and_the_refit_run_in_the_training_queue_as_one_mapped_search_per_parallel_task(
    dag,
) -> None:
    search = dag.task_dict["search"]
    assert search.queue == dag.task_dict["train"].queue == "training"
    assert dag.task_dict["plan_search"].queue == "default"
    assert search.op_kwargs_expand_input.value["shard"] == [0]  # churn: training.parallel 1


def test_training_again_on_the_champion_commit_skips_the_search(
    dag, monkeypatch: pytest.MonkeyPatch
) -> None:
    nothing = mlops_lib.training.NothingToTrain("the champion was trained on c0ffee already")
    _failing(monkeypatch, "open_search", nothing)
    plan = dag.task_dict["plan_search"].python_callable
    with pytest.raises(AirflowSkipException, match="trained on c0ffee already"):
        plan("c0ffee", None, dag_run=RUN, run_id="manual__1")


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
