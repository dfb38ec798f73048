"""One AutoML search run by several processes on a shared Optuna storage (a journal file,
as the LocalExecutor stack keeps it): the budget holds across all of them, each trial says
which worker ran it, a search opened twice stays one search, and the outcome is read from
the storage by whichever process refits."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import optuna
import pytest

from mlops_lib.automl import (
    OPENED_ATTR,
    OVER_BUDGET_ATTR,
    SearchFailed,
    create_search,
    run_trials,
    search_result,
)
from mlops_lib.datasets import split
from mlops_lib.features import model_input

from .test_metrics import wine_like, wine_spec

real_time = time.time


def journal(path: Path):
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _shard(path: str, shard: int, trials: int) -> list[tuple[int, str]]:
    """One trial task in a fresh interpreter, as a worker runs it (a fork of a process whose
    OpenMP threads already ran would hang in HistGradientBoosting): (trial number, worker)."""
    spec = wine_spec(budget={"trials": trials, "seconds": 120})
    train, _ = split(wine_like(), spec)
    done = run_trials(
        spec,
        journal(Path(path)),
        "wine.run",
        model_input(train, spec),
        train.cultivar,
        shard=shard,
        worker=f"worker-{shard}",
    )
    return [(t.number, t.worker) for t in done]


def test_two_processes_share_one_budget_and_every_trial_names_its_worker(
    tmp_path: Path,
) -> None:
    budget, path = 9, tmp_path / "studies.log"
    spec = wine_spec(budget={"trials": budget, "seconds": 120})
    create_search(spec, journal(path), "wine.run")
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = list(pool.map(_shard, [str(path)] * 2, [0, 1], [budget] * 2))
    numbers = sorted(n for run in runs for n, _ in run)
    assert numbers == list(range(budget))  # every trial once, none beyond the budget
    assert {w for run in runs for _, w in run} <= {"worker-0", "worker-1"}
    result = search_result(spec, journal(path), "wine.run")
    assert len(result.trials) == budget
    assert {t.worker for t in result.trials} == {w for run in runs for _, w in run}
    assert result.best.cv_score == max(t.cv_score for t in result.trials)
    study = optuna.load_study(study_name="wine.run", storage=journal(path))
    extra = [t for t in study.trials if t.user_attrs.get(OVER_BUDGET_ATTR)]
    assert all(t.number >= budget and t.state.name == "PRUNED" for t in extra)


def test_every_family_gets_its_default_trial_first_and_opening_again_changes_nothing(
    tmp_path: Path,
) -> None:
    spec = wine_spec(families=["linear", "random_forest"], budget={"trials": 2, "seconds": 60})
    storage = journal(tmp_path / "studies.log")
    create_search(spec, storage, "wine.run")
    opened = optuna.load_study(study_name="wine.run", storage=storage).user_attrs[OPENED_ATTR]
    time.sleep(0.01)
    create_search(spec, storage, "wine.run")  # a retried plan_search
    study = optuna.load_study(study_name="wine.run", storage=storage)
    assert study.user_attrs[OPENED_ATTR] == opened
    waiting = [t.system_attrs["fixed_params"] for t in study.trials if t.state.name == "WAITING"]
    assert waiting == [{"family": "linear"}, {"family": "random_forest"}]
    train, _ = split(wine_like(), spec)
    done = run_trials(spec, storage, "wine.run", model_input(train, spec), train.cultivar)
    assert [t.family for t in done] == ["linear", "random_forest"]  # a budget of 2: both


def test_the_seconds_budget_runs_from_the_first_trial_of_any_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlops_lib.automl

    spec = wine_spec(budget={"trials": 5, "seconds": 10})
    storage = journal(tmp_path / "studies.log")
    create_search(spec, storage, "wine.run")
    train, _ = split(wine_like(), spec)
    X, y = model_input(train, spec), train.cultivar
    clock = {"offset": 3600.0}  # the trial tasks waited an hour in a queue: nothing is lost
    monkeypatch.setattr(mlops_lib.automl.time, "time", lambda: real_time() + clock["offset"])

    def spend_the_budget(trial) -> None:
        clock["offset"] += 11  # the first trial took longer than the 10 s budget

    first = run_trials(spec, storage, "wine.run", X, y, on_trial=spend_the_budget)
    assert [t.number for t in first] == [0]
    assert run_trials(spec, storage, "wine.run", X, y) == []  # another task, too late
    assert [t.number for t in search_result(spec, storage, "wine.run").trials] == [0]


def test_a_search_that_finished_no_trial_fails_without_retries(tmp_path: Path) -> None:
    spec = wine_spec(budget={"trials": 5, "seconds": 10})
    storage = journal(tmp_path / "studies.log")
    create_search(spec, storage, "wine.run")
    with pytest.raises(SearchFailed, match="finished no trial within its budget"):
        search_result(spec, storage, "wine.run")


def test_a_retried_trial_task_goes_on_with_what_is_left_of_the_budget(tmp_path: Path) -> None:
    spec = wine_spec(budget={"trials": 4, "seconds": 60})
    storage = journal(tmp_path / "studies.log")
    create_search(spec, storage, "wine.run")
    train, _ = split(wine_like(), spec)
    X, y = model_input(train, spec), train.cultivar

    def crash(trial) -> None:
        if trial.number == 1:
            raise ConnectionError("MLflow went away")

    with pytest.raises(ConnectionError):
        run_trials(spec, storage, "wine.run", X, y, on_trial=crash)
    again = run_trials(spec, storage, "wine.run", X, y)  # the retry
    assert [t.number for t in again] == [2, 3]
    assert [t.number for t in search_result(spec, storage, "wine.run").trials] == [0, 1, 2, 3]
