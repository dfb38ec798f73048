"""Metrics: their names, which way is better, the CV scorers, holdout and live metrics.

The search (cross-validation), the gate (holdout) and monitoring (live metric on labelled
predictions) all take a metric's meaning from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from mlops_lib.spec import METRICS, ProjectSpec

if TYPE_CHECKING:
    import pandas as pd

# Metrics where lower is better; everything else is maximised.
LOWER_IS_BETTER = {"rmse", "mae", "log_loss"}
# Metrics that need every class's probability (a classifier's ``predict_proba``).
NEEDS_PROBABILITIES = {"roc_auc", "log_loss"}


class LiveMetric(TypedDict):
    """The spec's metric on labelled predictions (``value`` None when it cannot be computed)."""

    metric: str
    value: float | None
    rows: int
    note: NotRequired[str]
    labels_files: NotRequired[list[str]]


def positive_label(spec: ProjectSpec, classes: Sequence[Any]) -> Any:
    """The positive class of a binary target: the spec's (matched by value, then as text,
    so that an int label is not taken for a bool), else the last class."""
    wanted = spec.target.positive_class
    if wanted is not None:
        for same in (
            lambda c: type(c) is type(wanted) and c == wanted,
            lambda c: str(c) == str(wanted),
        ):
            found = [c for c in classes if same(c)]
            if found:
                return found[0]
    return classes[-1]


def metric_value(
    metric: str,
    y: Any,
    *,
    pred: Any = None,
    proba: Any = None,
    classes: Sequence[Any] = (),
    positive: Any = None,
) -> float:
    """One metric of predictions; NaN when the labels cannot define it (one class only).

    Classification metrics are computed over the classes the labels hold (a rare class a
    holdout or a fold lacks does not make them fail): ``f1`` is the positive class's F1 on a
    binary target and macro F1 otherwise; ``roc_auc`` is one-vs-rest macro on a multiclass
    target, over the classes present with both outcomes.
    """
    import numpy as np
    from sklearn import metrics as skm

    if metric in ("rmse", "mae", "r2"):
        y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
        if metric == "rmse":
            return float(np.sqrt(skm.mean_squared_error(y, pred)))
        if metric == "mae":
            return float(skm.mean_absolute_error(y, pred))
        return float(skm.r2_score(y, pred)) if len(y) > 1 else float("nan")
    y = np.asarray(y, dtype=object)
    present = [c for c in classes if (y == c).any()]
    # Labels are compared as values (sklearn cannot type an object array of bools).
    if metric == "accuracy":
        return float(np.mean(y == np.asarray(pred, dtype=object)))
    if metric == "balanced_accuracy":
        pred = np.asarray(pred, dtype=object)
        return float(np.mean([(pred[y == c] == c).mean() for c in present]))
    binary = len(classes) == 2
    if metric == "f1" and binary:
        pred = np.asarray(pred, dtype=object)
        return float(skm.f1_score(y == positive, pred == positive, zero_division=0.0))
    if metric in ("f1", "f1_macro"):
        pred = np.asarray(pred, dtype=object)
        scores = [skm.f1_score(y == c, pred == c, zero_division=0.0) for c in present]
        return float(np.mean(scores))
    if metric == "log_loss":
        position = {c: i for i, c in enumerate(classes)}
        if any(v not in position for v in y):  # a label the model never saw
            return float("nan")
        index = np.array([position[v] for v in y])
        return float(skm.log_loss(index, np.asarray(proba), labels=list(range(len(classes)))))
    return _roc_auc(y, np.asarray(proba, dtype=float), list(classes), positive if binary else None)


def _roc_auc(y: Any, proba: Any, classes: list[Any], positive: Any) -> float:
    """Binary ROC AUC of the positive class, or the mean one-vs-rest AUC of the classes
    present with both outcomes; NaN when no class has both."""
    import numpy as np
    from sklearn import metrics as skm

    targets = [positive] if positive is not None else classes
    scores = [
        skm.roc_auc_score(y == c, proba[:, classes.index(c)])
        for c in targets
        if 0 < int((y == c).sum()) < len(y)
    ]
    return float(np.mean(scores)) if scores else float("nan")


@dataclass(frozen=True)
class Predictions:
    """A fitted model's outputs on rows, computed once for every metric."""

    pred: Any
    proba: Any = None
    classes: tuple[Any, ...] = ()
    positive: Any = None

    @classmethod
    def of(cls, spec: ProjectSpec, model: Any, X: Any, needs_proba: bool = True) -> Predictions:
        if spec.target.task == "regression":
            return cls(model.predict(X))
        classes = tuple(c.item() if hasattr(c, "item") else c for c in model.classes_)
        proba = model.predict_proba(X) if needs_proba else None
        pred = model.classes_[proba.argmax(axis=1)] if proba is not None else model.predict(X)
        return cls(pred, proba, classes, positive_label(spec, classes))

    def metric(self, name: str, y: Any) -> float:
        return metric_value(
            name,
            y,
            pred=self.pred,
            proba=self.proba,
            classes=self.classes,
            positive=self.positive,
        )


def model_metric(spec: ProjectSpec, metric: str, model: Any, X: Any, y: Any) -> float:
    """A metric of a fitted model on rows (NaN where the labels cannot define it)."""
    return Predictions.of(spec, model, X, metric in NEEDS_PROBABILITIES).metric(metric, y)


def cv_scorer(spec: ProjectSpec) -> Callable[[Any, Any, Any], float]:
    """The spec's metric as a cross-validation scorer (estimator, X, y) -> score, as
    ``sklearn.model_selection.cross_val_score`` calls it; larger or smaller is better as
    :data:`LOWER_IS_BETTER` says (the raw value, not negated)."""
    metric = spec.training.metric
    return lambda model, X, y: model_metric(spec, metric, model, X, y)


def holdout_metrics(
    model: Any, X: pd.DataFrame, y: pd.Series, spec: ProjectSpec
) -> dict[str, float]:
    """Every metric of the task that the holdout's labels define, rounded to 6 decimals."""
    import math

    out = {}
    predictions = Predictions.of(spec, model, X)
    for name in METRICS[spec.target.task]:
        value = predictions.metric(name, y)
        if not math.isnan(value):
            out[name] = round(float(value), 6)
    return out


def live_metric(spec: ProjectSpec, frame: pd.DataFrame) -> LiveMetric:
    """The spec's training metric on labelled predictions, with what it could not compute.

    The prediction log keeps one score per row (the probability of the model's last class):
    a metric that needs every class's probability falls back to accuracy on a multiclass
    target, and the note says so."""
    import math

    name = spec.training.metric
    out: LiveMetric = {"metric": name, "value": None, "rows": len(frame)}
    if not len(frame):
        out["note"] = "no labelled predictions"
        return out
    if spec.target.task == "regression":
        value = metric_value(name, frame[spec.target.column], pred=frame["prediction"])
    else:
        value = _live_classification(spec, frame, out)
    if math.isnan(value):
        out["note"] = f"{out['metric']} needs more than one class among the labels"
        return out
    out["value"] = round(float(value), 6)
    return out


def _live_classification(spec: ProjectSpec, frame: pd.DataFrame, out: LiveMetric) -> float:
    """A classification metric on logged predictions (labels compared as text)."""
    import numpy as np

    y = frame[spec.target.column].astype(str).to_numpy(dtype=object)
    pred = frame["prediction"].astype(str).to_numpy(dtype=object)
    allowed = spec.schema.columns[spec.target.column].allowed
    raw = frame[spec.target.column].dropna().tolist() + frame["prediction"].dropna().tolist()
    try:  # sorted as values, as the model's classes are (10 after 9)
        ordered = sorted(set(allowed or raw))
    except TypeError:  # mixed types in the log: as text
        ordered = sorted(set(allowed or raw), key=str)
    classes = [str(c) for c in ordered]
    if len(classes) < 2:
        return float("nan")
    name = out["metric"]
    if name in NEEDS_PROBABILITIES and len(classes) != 2:
        out["metric"] = name = "accuracy"
        out["note"] = (
            f"{spec.training.metric} needs every class's probability; the prediction log keeps "
            f"one score per row, so the live metric is accuracy"
        )
    positive = str(positive_label(spec, classes))
    score = frame["score"].astype(float).to_numpy()  # the last class's probability
    proba = np.column_stack([1.0 - score, score]) if len(classes) == 2 else None
    return metric_value(name, y, pred=pred, proba=proba, classes=classes, positive=positive)
