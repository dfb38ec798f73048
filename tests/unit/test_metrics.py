"""Metrics, splits and the search on any task: string, int and bool labels, rare classes
that a holdout or a fold lacks, regression, and searches whose every trial fails."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops_lib.automl import SearchFailed, search
from mlops_lib.datasets import TrainingError, check_trainable, split
from mlops_lib.metrics import holdout_metrics, live_metric, metric_value
from mlops_lib.spec import SpecError, parse_spec


def make_spec(target: dict, columns: dict, **training) -> object:
    return parse_spec(
        {
            "name": "anyset",
            "source": {"path": "data/x.csv"},
            "schema": {"columns": columns, "event_time": "day"},
            "target": target,
            "training": {"budget": {"trials": 3, "seconds": 60}, "min_rows": 10, **training},
        }
    )


def wine_like(rows: int = 300, rare: int = 6, seed: int = 0) -> pd.DataFrame:
    """Three string classes; the rare one only in the oldest rows."""
    rng = np.random.default_rng(seed)
    label = rng.choice(["barolo", "grignolino"], rows)
    label[:rare] = "barbera"
    x = np.where(label == "barolo", 1.0, np.where(label == "barbera", -2.0, -0.5))
    return pd.DataFrame(
        {
            "day": pd.date_range("2026-01-01", periods=rows, freq="h", tz="UTC"),
            "alcohol": x + rng.normal(0, 0.4, rows),
            "colour": rng.normal(0, 1, rows),
            "cultivar": label,
        }
    )


WINE_COLUMNS = {
    "day": {"type": "datetime"},
    "alcohol": {"type": "float"},
    "colour": {"type": "float"},
    "cultivar": {"type": "category", "allowed": ["barbera", "barolo", "grignolino"]},
}


def wine_spec(**training):
    return make_spec({"column": "cultivar", "task": "classification"}, WINE_COLUMNS, **training)


def test_a_metric_that_does_not_fit_the_task_is_refused_with_the_choices() -> None:
    with pytest.raises(SpecError) as err:
        wine_spec(metric="rmse")
    assert "training.metric 'rmse' does not fit a classification target" in str(err.value)
    assert "f1_macro" in str(err.value)
    columns = {"day": {"type": "datetime"}, "x": {"type": "float"}, "y": {"type": "float"}}
    regression = make_spec({"column": "y", "task": "regression"}, columns)
    assert regression.training.metric == "rmse"


def test_f1_on_multiclass_string_labels_is_macro_f1_over_the_known_classes() -> None:
    y = np.array(["a", "b", "b", "c"], dtype=object)
    pred = np.array(["a", "b", "c", "c"], dtype=object)
    value = metric_value("f1", y, pred=pred, classes=["a", "b", "c", "d"])
    assert value == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


def test_roc_auc_of_a_holdout_without_the_rare_class_uses_the_classes_it_has() -> None:
    y = np.array(["a", "b", "a", "b"], dtype=object)
    proba = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.3, 0.6, 0.1]])
    assert metric_value("roc_auc", y, proba=proba, classes=["a", "b", "c"]) == 1.0
    assert np.isnan(metric_value("roc_auc", y[:1], proba=proba[:1], classes=["a", "b", "c"]))


def test_the_time_split_keeps_a_rare_class_in_training_and_in_the_holdout() -> None:
    spec = wine_spec()
    train, holdout = split(wine_like(), spec)
    assert (train.cultivar == "barbera").sum() >= 3 and (holdout.cultivar == "barbera").sum() == 1
    assert len(train) + len(holdout) == 300


def test_a_class_with_too_few_rows_is_a_clear_error_naming_it() -> None:
    with pytest.raises(TrainingError, match=r"\{'barbera': 2\}.*training.cv_folds=3"):
        check_trainable(wine_like(rare=2), wine_spec(), "0123456789abcdef")


@pytest.mark.parametrize("metric", ["f1", "roc_auc", "accuracy", "log_loss", "balanced_accuracy"])
def test_multiclass_training_with_a_rare_class_scores_every_metric(metric: str) -> None:
    from mlops_lib.features import model_input

    spec = wine_spec(metric=metric, families=["linear"])
    train, holdout = split(wine_like(), spec)
    result = search(spec, model_input(train, spec), train.cultivar)
    assert np.isfinite(result.best.cv_score)
    from mlops_lib.automl import make_estimator
    from mlops_lib.features import build_pipeline

    model = build_pipeline(spec, make_estimator("linear", {}, "classification", 1))
    model.fit(model_input(train, spec), train.cultivar)
    metrics = holdout_metrics(model, model_input(holdout, spec), holdout.cultivar, spec)
    assert metric in metrics and "f1_macro" in metrics


def test_multiclass_int_labels_score_the_same_on_the_holdout_and_as_the_live_metric() -> None:
    from mlops_lib.automl import make_estimator
    from mlops_lib.features import build_pipeline, model_input, model_target

    # 3, 7 and 12: sorted as text, 12 would come first.
    codes = {"barbera": 3, "barolo": 7, "grignolino": 12}
    frame = wine_like().assign(cultivar=lambda d: d.cultivar.map(codes))
    columns = WINE_COLUMNS | {"cultivar": {"type": "int", "allowed": [3, 7, 12]}}
    target = {"column": "cultivar", "task": "classification"}
    spec = make_spec(target, columns, metric="f1", families=["linear"])
    train, holdout = split(frame, spec)
    check_trainable(train, spec, "0123456789abcdef")
    result = search(spec, model_input(train, spec), model_target(train, spec))
    assert np.isfinite(result.best.cv_score)
    model = build_pipeline(spec, make_estimator("linear", {}, "classification", 1))
    model.fit(model_input(train, spec), model_target(train, spec))
    assert [c.item() for c in model.classes_] == [3, 7, 12]
    X, y = model_input(holdout, spec), model_target(holdout, spec)
    metrics = holdout_metrics(model, X, y, spec)
    assert metrics["f1"] == metrics["f1_macro"] > 0.6 and 0.6 < metrics["roc_auc"] <= 1.0
    # The same rows as the prediction log keeps them: the class, the last class's probability.
    logged = pd.DataFrame(
        {
            "cultivar": y.to_numpy(),
            "prediction": model.predict(X),
            "score": model.predict_proba(X)[:, -1],
        }
    )
    live = live_metric(spec, logged)
    assert live == {"metric": "f1", "value": metrics["f1"], "rows": len(holdout)}
    spec_auc = make_spec(target, columns)  # roc_auc
    live_auc = live_metric(spec_auc, logged)
    assert live_auc["metric"] == "accuracy" and live_auc["value"] == metrics["accuracy"]


def test_bool_labels_train_and_score_with_the_positive_class() -> None:
    from mlops_lib.features import model_input

    frame = wine_like().assign(good=lambda d: d.cultivar == "barolo").drop(columns="cultivar")
    columns = {k: v for k, v in WINE_COLUMNS.items() if k != "cultivar"} | {
        "good": {"type": "bool", "allowed": [True, False]}
    }
    spec = make_spec(
        {"column": "good", "task": "classification", "positive_class": True},
        columns,
        metric="f1",
        families=["linear"],
    )
    train, _ = split(frame, spec)
    result = search(spec, model_input(train, spec), train.good)
    assert result.best.cv_score > 0.8


def test_a_search_whose_every_family_fails_stops_with_each_cause() -> None:
    from mlops_lib.features import model_input

    spec = wine_spec(families=["linear", "random_forest"], budget={"trials": 20, "seconds": 60})
    train, _ = split(wine_like(), spec)
    X = model_input(train, spec).assign(alcohol=np.inf)  # no estimator takes infinities
    with pytest.raises(SearchFailed) as err:
        search(spec, X, train.cultivar)
    assert "linear: ValueError" in str(err.value) and "random_forest: ValueError" in str(err.value)


def test_live_metric_of_a_multiclass_model_falls_back_to_accuracy_and_says_why() -> None:
    spec = wine_spec(metric="roc_auc")
    frame = pd.DataFrame(
        {"cultivar": ["barolo", "barbera", "barolo"], "prediction": ["barolo", "barolo", "barolo"]}
    ).assign(score=0.5)
    out = live_metric(spec, frame)
    assert out["metric"] == "accuracy" and out["value"] == pytest.approx(2 / 3)
    assert "one score per row" in out["note"]


def test_live_metric_of_a_regression_is_its_error_on_the_labels() -> None:
    columns = {"day": {"type": "datetime"}, "x": {"type": "float"}, "y": {"type": "float"}}
    spec = make_spec({"column": "y", "task": "regression"}, columns, metric="mae")
    frame = pd.DataFrame({"y": [1.0, 2.0, 4.0], "prediction": [1.5, 2.0, 3.0], "score": 0.0})
    assert live_metric(spec, frame)["value"] == pytest.approx(0.5)


def test_every_metric_of_bool_labels_in_an_object_array() -> None:
    y = pd.Series([True, False, True, True], dtype="boolean").to_numpy(dtype=object)
    pred = np.array([True, False, False, True])
    proba = np.array([[0.2, 0.8], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    kw = {"pred": pred, "proba": proba, "classes": [False, True], "positive": True}
    assert metric_value("accuracy", y, **kw) == 0.75
    assert metric_value("roc_auc", y, **kw) == 1.0
    assert 0 < metric_value("log_loss", y, **kw) < 1
    assert metric_value("f1", y, **kw) == pytest.approx(0.8)


def test_a_nullable_bool_target_is_learned_with_bool_classes() -> None:
    from mlops_lib.automl import make_estimator
    from mlops_lib.features import build_pipeline, model_input, model_target

    frame = wine_like().assign(good=lambda d: (d.cultivar == "barolo").astype("boolean"))
    columns = {k: v for k, v in WINE_COLUMNS.items() if k != "cultivar"} | {
        "good": {"type": "bool", "allowed": [True, False]}
    }
    spec = make_spec({"column": "good", "task": "classification"}, columns)
    model = build_pipeline(spec, make_estimator("linear", {}, "classification", 1))
    model.fit(model_input(frame, spec), model_target(frame, spec))
    assert [type(c.item()) for c in model.classes_] == [bool, bool]


def test_live_roc_auc_pairs_the_logged_score_with_the_last_class_by_value() -> None:
    columns = {"day": {"type": "datetime"}, "x": {"type": "float"}, "y": {"type": "int"}}
    spec = make_spec({"column": "y", "task": "classification"}, columns)
    frame = pd.DataFrame({"y": [2, 10, 2, 10], "score": [0.1, 0.9, 0.2, 0.8]})
    frame["prediction"] = np.where(frame.score > 0.5, 10, 2)
    assert live_metric(spec, frame)["value"] == 1.0


def test_log_loss_of_a_label_the_model_never_saw_is_left_out() -> None:
    y = np.array(["a", "new"], dtype=object)
    proba = np.array([[0.9, 0.1], [0.5, 0.5]])
    assert np.isnan(metric_value("log_loss", y, proba=proba, classes=["a", "b"]))
