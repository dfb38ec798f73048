"""AutoML: a seeded Optuna search over model families and their hyperparameters.

The budget comes from the spec (trials and wall-clock seconds); every trial is scored by
cross-validation on the training split only.
"""

from __future__ import annotations

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


@dataclass
class Trial:
    number: int
    family: str
    params: dict[str, Any]
    cv_score: float
    cv_std: float
    seconds: float


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


def search(
    spec: ProjectSpec,
    X: pd.DataFrame,
    y: pd.Series,
    *,
    on_trial: Callable[[Trial], None] | None = None,
) -> SearchResult:
    """Run the search within the spec's budget; returns the best trial and all trials.

    A failing trial is skipped; once every family has failed with none succeeding the
    search stops with :class:`SearchFailed` naming each family's cause."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t = spec.training
    trials: list[Trial] = []
    failures = _Failures(list(t.families))
    started = time.monotonic()

    def objective(trial: Any) -> float:
        family = trial.suggest_categorical("family", list(t.families))
        params = _suggest(trial, family, spec.target.task)
        t0 = time.monotonic()
        pipe = build_pipeline(spec, make_estimator(family, params, spec.target.task, t.seed))
        try:
            scores = _cross_validate(spec, pipe, X, y)
        except TRIAL_ERRORS as exc:  # recorded; the search decides whether to stop
            failures.record(family, exc)
            if not trials and failures.every_family_failed():
                trial.study.stop()
            raise optuna.TrialPruned() from exc
        result = Trial(
            trial.number,
            family,
            params,
            float(scores.mean()),
            float(scores.std()),
            time.monotonic() - t0,
        )
        trials.append(result)
        if on_trial:
            on_trial(result)
        return result.cv_score

    direction = "minimize" if t.metric in LOWER_IS_BETTER else "maximize"
    _study(spec, direction).optimize(objective, n_trials=t.budget.trials, timeout=t.budget.seconds)
    if not trials and failures.causes:
        raise failures.error(t.metric)
    if not trials:
        raise RuntimeError("the AutoML search finished no trial within its budget")
    pick = min if direction == "minimize" else max
    best = pick(trials, key=lambda r: r.cv_score)
    return SearchResult(best=best, trials=trials, seconds=time.monotonic() - started)


def _study(spec: ProjectSpec, direction: str) -> Any:
    """A seeded TPE study where every family gets one trial with defaults first."""
    import optuna

    families = spec.training.families
    sampler = optuna.samplers.TPESampler(seed=spec.training.seed, n_startup_trials=len(families))
    study = optuna.create_study(direction=direction, sampler=sampler)
    for family in families:
        study.enqueue_trial({"family": family}, skip_if_exists=True)
    return study
