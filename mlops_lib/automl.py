"""AutoML: a seeded Optuna search over model families and their hyperparameters.

The budget comes from the spec (trials and wall-clock seconds); every trial is scored by
cross-validation on the training split only. A search is an Optuna study in a shared
storage (:func:`study_storage`): any number of processes, on any machine that reaches the
storage, run its trials (:func:`run_trials`) and the budget holds across all of them;
:func:`search_result` reads the outcome.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_lib.datasets import TrainingError
from mlops_lib.features import build_pipeline
from mlops_lib.metrics import LOWER_IS_BETTER, cv_scorer
from mlops_lib.spec import ProjectSpec

if TYPE_CHECKING:
    import pandas as pd

    from mlops_lib.settings import Settings


@dataclass
class Trial:
    number: int
    family: str
    params: dict[str, Any]
    cv_score: float
    cv_std: float
    seconds: float
    worker: str = ""


class SearchFailed(TrainingError):
    """Every model family failed on this data: the search stops at once with the cause
    (retrying cannot help)."""


@dataclass
class SearchResult:
    best: Trial
    trials: list[Trial] = field(default_factory=list)
    seconds: float = 0.0


def make_estimator(family: str, params: dict[str, Any], task: str, seed: int) -> Any:
    """An unfitted scikit-learn estimator of a family with given hyperparameters."""
    from sklearn import ensemble, linear_model

    classify = task == "classification"
    if family == "linear":
        if classify:
            return linear_model.LogisticRegression(C=params.get("C", 1.0), max_iter=2000)
        return linear_model.Ridge(alpha=params.get("alpha", 1.0))
    if family in ("random_forest", "extra_trees"):
        cls = {
            ("random_forest", True): ensemble.RandomForestClassifier,
            ("random_forest", False): ensemble.RandomForestRegressor,
            ("extra_trees", True): ensemble.ExtraTreesClassifier,
            ("extra_trees", False): ensemble.ExtraTreesRegressor,
        }[(family, classify)]
        return cls(
            n_estimators=params.get("n_estimators", 100),
            max_depth=params.get("max_depth"),
            min_samples_leaf=params.get("min_samples_leaf", 1),
            max_features=params.get("max_features", "sqrt"),
            random_state=seed,
            n_jobs=1,
        )
    if family == "hist_gradient_boosting":
        cls = (
            ensemble.HistGradientBoostingClassifier
            if classify
            else ensemble.HistGradientBoostingRegressor
        )
        return cls(
            learning_rate=params.get("learning_rate", 0.1),
            max_leaf_nodes=params.get("max_leaf_nodes", 31),
            min_samples_leaf=params.get("min_samples_leaf", 20),
            l2_regularization=params.get("l2_regularization", 0.0),
            max_iter=params.get("max_iter", 100),
            random_state=seed,
        )
    raise ValueError(f"unknown model family {family!r}")


def _suggest(trial: Any, family: str, task: str) -> dict[str, Any]:
    if family == "linear":
        if task == "classification":
            return {"C": trial.suggest_float("C", 1e-3, 1e2, log=True)}
        return {"alpha": trial.suggest_float("alpha", 1e-3, 1e2, log=True)}
    if family in ("random_forest", "extra_trees"):
        return {
            "n_estimators": trial.suggest_int("n_estimators", 50, 200, step=50),
            "max_depth": trial.suggest_categorical("max_depth", [6, 10, 16, None]),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 20, log=True),
            "max_features": trial.suggest_categorical("max_features", ["sqrt", 0.5]),
        }
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 8, 64, log=True),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 10, 100, log=True),
        "l2_regularization": trial.suggest_float("l2_regularization", 1e-4, 1.0, log=True),
        "max_iter": trial.suggest_int("max_iter", 50, 300, step=50),
    }


def _cv(spec: ProjectSpec) -> Any:
    from sklearn.model_selection import KFold, StratifiedKFold

    t = spec.training
    kind = StratifiedKFold if spec.target.task == "classification" else KFold
    return kind(n_splits=t.cv_folds, shuffle=True, random_state=t.seed)


def _cross_validate(spec: ProjectSpec, pipe: Any, X: pd.DataFrame, y: pd.Series) -> Any:
    """Fold scores of the spec's metric; raises what a fold raised, NaN scores included."""
    import warnings

    import numpy as np
    from sklearn.model_selection import cross_val_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # e.g. a class smaller than the folds
        scores = cross_val_score(
            pipe, X, y, cv=_cv(spec), scoring=cv_scorer(spec), n_jobs=1, error_score="raise"
        )
    if np.isnan(scores).any():
        raise ValueError(
            f"{spec.training.metric} is undefined on {int(np.isnan(scores).sum())} of "
            f"{len(scores)} folds (a fold's labels hold a single class)"
        )
    return scores


@dataclass
class _Failures:
    """The first error of each family; the search stops once every family failed."""

    families: list[str]
    causes: dict[str, str] = field(default_factory=dict)

    def record(self, family: str, exc: Exception) -> None:
        first = (str(exc).splitlines() or [""])[0]
        self.causes.setdefault(family, f"{type(exc).__name__}: {first}")

    def every_family_failed(self) -> bool:
        return set(self.causes) >= set(self.families)

    def error(self, metric: str) -> SearchFailed:
        causes = "; ".join(f"{family}: {cause}" for family, cause in self.causes.items())
        return SearchFailed(f"every AutoML trial failed on {metric}: {causes}")


# What a trial's data or parameters can raise; anything else is a fault to retry, not data.
TRIAL_ERRORS = (ValueError, TypeError, ArithmeticError)
# Study attributes and trial attributes the platform keeps in the Optuna storage.
OPENED_ATTR = "mlops.opened"
ERROR_ATTR, WORKER_ATTR, STD_ATTR, SECONDS_ATTR = "error", "worker", "cv_std", "fit_seconds"
OVER_BUDGET_ATTR, STARTED_ATTR = "over_budget", "started_at"


def study_storage(settings: Settings, name: str) -> Any:
    """Where the search ``name`` keeps its study, shared by every process that runs trials.

    PostgreSQL (Optuna's RDB storage) on the postgres backend, so trial tasks on any
    Celery worker share one study; otherwise an Optuna journal file of its own under the
    stack folder, safe for several processes of one machine (LocalExecutor)."""
    import optuna

    if settings.optuna_storage_url:
        return optuna.storages.RDBStorage(settings.optuna_storage_url)
    if settings.backend == "postgres":
        url = settings.postgres_url(settings.postgres_optuna_db)
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    from optuna.storages.journal import JournalFileBackend

    folder = settings.stack_dir / "optuna"
    folder.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(folder / f"{name}.log")))


def direction(spec: ProjectSpec) -> str:
    return "minimize" if spec.training.metric in LOWER_IS_BETTER else "maximize"


def create_search(spec: ProjectSpec, storage: Any, name: str) -> None:
    """The study of one search (idempotent): every family gets one trial with defaults
    first."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name, storage=storage, direction=direction(spec), load_if_exists=True
    )
    if OPENED_ATTR in study.user_attrs:
        return
    for family in spec.training.families:
        study.enqueue_trial({"family": family}, skip_if_exists=True)
    study.set_user_attr(OPENED_ATTR, time.time())


def _load(spec: ProjectSpec, storage: Any, name: str, shard: int) -> Any:
    """The study with this shard's own seeded sampler (shards propose different trials)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t = spec.training
    sampler = optuna.samplers.TPESampler(seed=t.seed + shard, n_startup_trials=len(t.families))
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler)


def run_trials(
    spec: ProjectSpec,
    storage: Any,
    name: str,
    X: pd.DataFrame,
    y: pd.Series,
    *,
    shard: int = 0,
    worker: str = "",
    on_trial: Callable[[Trial], None] | None = None,
) -> list[Trial]:
    """Run trials of a shared study until its budget is spent: trials counted across every
    process that runs them, seconds from the first trial any of them started (a task that
    waited in a queue loses nothing). Returns this process's."""
    study = _load(spec, storage, name, shard)
    budget = spec.training.budget.trials
    mine: list[Trial] = []
    while True:
        # One read of the shared storage per trial (a round trip to PostgreSQL with Celery).
        trials = study.get_trials(deepcopy=False)
        if time.time() >= _deadline(spec, trials) or _started(trials) >= budget:
            break
        if _every_family_failed(spec, trials):
            break
        trial = study.ask()
        if trial.number >= budget:  # another process took the last one meanwhile
            trial.set_user_attr(OVER_BUDGET_ATTR, True)
            study.tell(trial, state=_state("PRUNED"))
            break
        done = _run_trial(spec, study, trial, X, y, worker)
        if done is not None:
            mine.append(done)
            if on_trial:
                on_trial(done)
    return mine


def _deadline(spec: ProjectSpec, trials: list) -> float:
    """When the budget's seconds run out: from the first trial any process started."""
    starts = [t.user_attrs.get(STARTED_ATTR) for t in trials]
    first = min((s for s in starts if s is not None), default=time.time())
    return first + spec.training.budget.seconds


def _started(trials: list) -> int:
    """Trials any process took (enqueued ones still waiting are not)."""
    states = {_state(s) for s in ("RUNNING", "COMPLETE", "PRUNED", "FAIL")}
    return sum(t.state in states for t in trials)


def _state(name: str) -> Any:
    from optuna.trial import TrialState

    return TrialState[name]


def _run_trial(
    spec: ProjectSpec, study: Any, trial: Any, X: pd.DataFrame, y: pd.Series, worker: str
) -> Trial | None:
    """One trial told to the study: its score, or its error (None) when the data or the
    parameters make it fail; any other error fails the trial and propagates."""
    t = spec.training
    try:  # from here on the trial is told, whatever happens (else it stays RUNNING)
        trial.set_user_attr(STARTED_ATTR, time.time())
        family = trial.suggest_categorical("family", list(t.families))
        params = _suggest(trial, family, spec.target.task)
        trial.set_user_attr(WORKER_ATTR, worker)
        t0 = time.monotonic()
        pipe = build_pipeline(spec, make_estimator(family, params, spec.target.task, t.seed))
        scores = _cross_validate(spec, pipe, X, y)
    except TRIAL_ERRORS as exc:  # recorded; the search decides whether to stop
        first = (str(exc).splitlines() or [""])[0]
        trial.set_user_attr(ERROR_ATTR, f"{type(exc).__name__}: {first}")
        study.tell(trial, state=_state("FAIL"))
        return None
    except BaseException:
        with contextlib.suppress(Exception):  # the storage itself may be what failed
            study.tell(trial, state=_state("FAIL"))
        raise
    result = Trial(
        trial.number,
        family,
        params,
        float(scores.mean()),
        float(scores.std()),
        time.monotonic() - t0,
        worker,
    )
    trial.set_user_attr(STD_ATTR, result.cv_std)
    trial.set_user_attr(SECONDS_ATTR, result.seconds)
    study.tell(trial, result.cv_score)
    return result


def _failures(spec: ProjectSpec, trials: list) -> _Failures:
    failures = _Failures(list(spec.training.families))
    for frozen in trials:
        if frozen.state == _state("FAIL") and ERROR_ATTR in frozen.user_attrs:
            family = frozen.params.get("family", "?")
            failures.causes.setdefault(family, frozen.user_attrs[ERROR_ATTR])
    return failures


def _every_family_failed(spec: ProjectSpec, trials: list) -> bool:
    """True once every family failed and none succeeded: no trial can help any more."""
    if any(t.state == _state("COMPLETE") for t in trials):
        return False
    return _failures(spec, trials).every_family_failed()


def search_result(spec: ProjectSpec, storage: Any, name: str) -> SearchResult:
    """The finished search: its best trial and every completed one (from any process);
    SearchFailed naming each family's cause when every family failed."""
    import optuna

    every = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    trials = [
        Trial(
            frozen.number,
            frozen.params["family"],
            {k: v for k, v in frozen.params.items() if k != "family"},
            float(frozen.value),
            float(frozen.user_attrs.get(STD_ATTR, 0.0)),
            float(frozen.user_attrs.get(SECONDS_ATTR, 0.0)),
            str(frozen.user_attrs.get(WORKER_ATTR, "")),
        )
        for frozen in every
        if frozen.state == _state("COMPLETE")
    ]
    if not trials:
        failures = _failures(spec, every)
        if failures.causes:
            raise failures.error(spec.training.metric)
        raise SearchFailed(
            "the AutoML search finished no trial within its budget "
            f"({spec.training.budget.trials} trials, {spec.training.budget.seconds} s)"
        )
    pick = min if direction(spec) == "minimize" else max
    best = pick(trials, key=lambda r: r.cv_score)
    seconds = sum(r.seconds for r in trials)
    return SearchResult(best=best, trials=sorted(trials, key=lambda r: r.number), seconds=seconds)


def search(
    spec: ProjectSpec,
    X: pd.DataFrame,
    y: pd.Series,
    *,
    on_trial: Callable[[Trial], None] | None = None,
) -> SearchResult:
    """The whole search in this process, on a study kept in memory."""
    import optuna

    storage, name = optuna.storages.InMemoryStorage(), "search"
    create_search(spec, storage, name)
    run_trials(spec, storage, name, X, y, on_trial=on_trial)
    return search_result(spec, storage, name)
