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
    DEADLINE_ATTR,
    OVER_BUDGET_ATTR,
    create_search,
    run_trials,
    search_result,
)
from mlops_lib.datasets import split
from mlops_lib.features import model_input

from .test_metrics import wine_like, wine_spec


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
    deadline = optuna.load_study(study_name="wine.run", storage=storage).user_attrs[DEADLINE_ATTR]
    time.sleep(0.01)
    create_search(spec, storage, "wine.run")  # a retried plan_search
    study = optuna.load_study(study_name="wine.run", storage=storage)
    assert study.user_attrs[DEADLINE_ATTR] == deadline
    waiting = [t.system_attrs["fixed_params"] for t in study.trials if t.state.name == "WAITING"]
    assert waiting == [{"family": "linear"}, {"family": "random_forest"}]
    train, _ = split(wine_like(), spec)
    done = run_trials(spec, storage, "wine.run", model_input(train, spec), train.cultivar)
    assert [t.family for t in done] == ["linear", "random_forest"]  # a budget of 2: both


def test_a_trial_task_started_after_the_deadline_runs_nothing_and_the_search_says_so(
    tmp_path: Path,
) -> None:
    spec = wine_spec(budget={"trials": 5, "seconds": 10})
    storage = journal(tmp_path / "studies.log")
    create_search(spec, storage, "wine.run")
    study = optuna.load_study(study_name="wine.run", storage=storage)
    study.set_user_attr(DEADLINE_ATTR, time.time() - 1)  # the budget's seconds are spent
    train, _ = split(wine_like(), spec)
    assert run_trials(spec, storage, "wine.run", model_input(train, spec), train.cultivar) == []
    with pytest.raises(RuntimeError, match="finished no trial within its budget"):
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
