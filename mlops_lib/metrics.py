"""Metrics: their names, which way is better, the CV scorers, holdout and live metrics.

The search (cross-validation), the gate (holdout) and monitoring (live metric on labelled
predictions) all take a metric's meaning from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from mlops_lib.spec import ProjectSpec

if TYPE_CHECKING:
    import pandas as pd

# Metrics where lower is better; everything else is maximised.
LOWER_IS_BETTER = {"rmse", "mae", "log_loss"}
SCORERS = {
    "roc_auc": "roc_auc",
    "accuracy": "accuracy",
    "f1": "f1",
    "log_loss": "neg_log_loss",
    "rmse": "neg_root_mean_squared_error",
    "mae": "neg_mean_absolute_error",
    "r2": "r2",
}


class LiveMetric(TypedDict):
    """The spec's metric on labelled predictions (``value`` None when it cannot be computed)."""

    metric: str
    value: float | None
    rows: int
    note: NotRequired[str]
    labels_files: NotRequired[list[str]]


def holdout_metrics(model: Any, X: pd.DataFrame, y: pd.Series, task: str) -> dict[str, float]:
    """Metrics of a fitted model on the holdout."""
    import numpy as np  # heavy: kept out of CLI start-up
    from sklearn import metrics as skm  # heavy: kept out of CLI start-up

    if task == "classification":
        proba = model.predict_proba(X)
        pred = model.predict(X)
        out = {
            "accuracy": skm.accuracy_score(y, pred),
            "f1": skm.f1_score(y, pred, average="binary" if proba.shape[1] == 2 else "macro"),
            "log_loss": skm.log_loss(y, proba, labels=model.classes_),
        }
        if proba.shape[1] == 2:
            out["roc_auc"] = skm.roc_auc_score(y, proba[:, 1])
        else:
            out["roc_auc"] = skm.roc_auc_score(y, proba, multi_class="ovr")
    else:
        pred = model.predict(X)
        out = {
            "rmse": float(np.sqrt(skm.mean_squared_error(y, pred))),
            "mae": skm.mean_absolute_error(y, pred),
            "r2": skm.r2_score(y, pred),
        }
    return {k: round(float(v), 6) for k, v in out.items()}


def live_metric(spec: ProjectSpec, frame: pd.DataFrame) -> LiveMetric:
    """The spec's training metric on labelled predictions, with what it could not compute."""
    from sklearn import metrics as skm  # heavy: kept out of CLI start-up

    name = spec.training.metric
    out: LiveMetric = {"metric": name, "value": None, "rows": len(frame)}
    if not len(frame):
        out["note"] = "no labelled predictions"
        return out
    y = frame[spec.target.column]
    if spec.target.task == "classification":
        y = y.astype("string")
        pred = frame["prediction"].astype("string")
        positive = str(spec.target.positive_class if spec.target.positive_class is not None else 1)
        if name == "roc_auc":
            if y.nunique() < 2:
                out["note"] = "roc_auc needs both classes among the labels"
                return out
            value = skm.roc_auc_score(y == positive, frame["score"].astype(float))
        elif name == "f1":
            value = skm.f1_score(y == positive, pred == positive)
        elif name == "log_loss":
            value = skm.log_loss(y == positive, frame["score"].astype(float), labels=[False, True])
        else:
            value = skm.accuracy_score(y, pred)
            out["metric"] = "accuracy"
    else:
        y = y.astype(float)
        pred = frame["prediction"].astype(float)
        value = {
            "rmse": lambda: skm.mean_squared_error(y, pred) ** 0.5,
            "mae": lambda: skm.mean_absolute_error(y, pred),
        }.get(name, lambda: skm.r2_score(y, pred))()
        if name not in ("rmse", "mae"):
            out["metric"] = "r2"
    out["value"] = round(float(value), 6)
    return out
