"""Data shapes users have: written dates, datetime features, awkward column names,
high-cardinality categories: checked, coerced, trained on and served as declared."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops_lib.automl import make_estimator
from mlops_lib.features import build_pipeline, model_input
from mlops_lib.quality import check_batch, coerce
from mlops_lib.serving.schema import instance_model
from mlops_lib.spec import SpecError, parse_spec


def spec_of(columns: dict, target: str = "label", **schema) -> object:
    return parse_spec(
        {
            "name": "shapes",
            "source": {"path": "data/x.csv"},
            "schema": {"columns": columns, **schema},
            "target": {"column": target, "task": "classification"},
            "training": {"min_rows": 10},
        }
    )


@pytest.mark.parametrize(
    ("fmt", "written"),
    [
        ("%Y/%m/%d", ["2026/01/31", "2026/02/01"]),
        ("%d.%m.%Y", ["31.01.2026", "01.02.2026"]),
        ("epoch_s", [1769817600, 1769904000]),
    ],
)
def test_written_dates_are_read_as_their_format_declares(fmt: str, written: list) -> None:
    spec = spec_of(
        {"day": {"type": "datetime", "format": fmt}, "label": {"type": "int"}}, event_time="day"
    )
    frame = pd.DataFrame({"day": written, "label": [0, 1]})
    report = check_batch(frame, spec, now=pd.Timestamp("2026-06-01", tz="UTC"))
    assert not [v for v in report.violations if v.severity == "blocking"]
    days = coerce(frame, spec)["day"]
    assert days.dt.strftime("%Y-%m-%d").tolist() == ["2026-01-31", "2026-02-01"]


def test_a_date_that_does_not_match_its_format_is_named() -> None:
    spec = spec_of({"day": {"type": "datetime", "format": "%d.%m.%Y"}, "label": {"type": "int"}})
    report = check_batch(pd.DataFrame({"day": ["31.01.2026", "2026-13-45"], "label": [0, 1]}), spec)
    bad = [v for v in report.violations if v.column == "day"]
    assert bad and "2026-13-45" in bad[0].examples


def test_a_format_on_a_non_datetime_column_is_refused() -> None:
    with pytest.raises(SpecError, match="format and parts need type datetime"):
        spec_of({"x": {"type": "int", "format": "epoch_s"}, "label": {"type": "int"}})


def test_declared_datetime_parts_become_model_inputs_at_training_and_serving() -> None:
    rng = np.random.default_rng(0)
    days = pd.date_range("2026-01-05", periods=140, freq="D")
    frame = pd.DataFrame(
        {
            "signup": days.strftime("%d.%m.%Y"),
            "Monthly Spend (EUR)": rng.normal(50, 5, 140),
            "plan.tier": rng.choice([f"tier-{i}" for i in range(300)], 140),
            "label": (days.weekday >= 5).astype(int),  # weekends only: learnable from parts
        }
    )
    columns = {
        "signup": {"type": "datetime", "format": "%d.%m.%Y", "parts": ["weekday", "day_of_year"]},
        "Monthly Spend (EUR)": {"type": "float"},
        "plan.tier": {"type": "category"},
        "label": {"type": "int", "allowed": [0, 1]},
    }
    spec = spec_of(columns)
    model = build_pipeline(spec, make_estimator("random_forest", {}, "classification", 1))
    model.fit(model_input(frame, spec), frame["label"])
    assert model.score(model_input(frame, spec), frame["label"]) == 1.0
    encoded = model[:-1].transform(model_input(frame, spec))
    assert encoded.shape[1] <= 2 + 1 + 51  # parts, spend, at most 50 one-hot + infrequent
    request = {"signup": "03.01.2027", "Monthly Spend (EUR)": 49.5, "plan.tier": "tier-1"}
    row = instance_model(spec).model_validate(request).model_dump()
    assert model.predict(model_input(pd.DataFrame([row]), spec))[0] == 1  # a Sunday


def test_a_datetime_part_named_like_a_column_is_refused() -> None:
    columns = {
        "signup": {"type": "datetime", "parts": ["weekday"]},
        "signup_weekday": {"type": "int"},
        "label": {"type": "int"},
    }
    with pytest.raises(SpecError, match="'signup_weekday', which is already a column"):
        spec_of(columns)


def test_a_one_percent_minority_class_is_trained_and_held_out() -> None:
    from mlops_lib.automl import search
    from mlops_lib.datasets import split
    from mlops_lib.features import model_target
    from mlops_lib.metrics import holdout_metrics

    rng = np.random.default_rng(3)
    label = np.where(np.arange(1000) % 100 == 7, "fraud", "ok")  # 10 rows in 1,000
    frame = pd.DataFrame(
        {
            "day": pd.date_range("2026-01-01", periods=1000, freq="h", tz="UTC"),
            "amount": np.where(label == "fraud", 900.0, 40.0) + rng.normal(0, 20, 1000),
            "label": label,
        }
    )
    columns = {
        "day": {"type": "datetime"},
        "amount": {"type": "float"},
        "label": {"type": "category", "allowed": ["fraud", "ok"]},
    }
    spec = parse_spec(
        {
            "name": "minority",
            "source": {"path": "data/x.csv"},
            "schema": {"columns": columns, "event_time": "day"},
            "target": {"column": "label", "task": "classification", "positive_class": "fraud"},
            "training": {"min_rows": 100, "metric": "f1", "families": ["linear"]},
        }
    )
    train, holdout = split(frame, spec)
    assert (holdout.label == "fraud").sum() >= 1 and (train.label == "fraud").sum() >= 3
    result = search(spec, model_input(train, spec), model_target(train, spec))
    model = build_pipeline(spec, make_estimator("linear", {}, "classification", 1))
    model.fit(model_input(train, spec), model_target(train, spec))
    metrics = holdout_metrics(model, model_input(holdout, spec), model_target(holdout, spec), spec)
    assert result.best.cv_score > 0.8 and metrics["f1"] > 0.8, (result.best, metrics)


def test_two_hundred_and_more_columns_train_on_two_hundred_rows() -> None:
    from mlops_lib.automl import search

    rng = np.random.default_rng(4)
    frame = pd.DataFrame(rng.normal(size=(200, 220)), columns=[f"Gene.{i}" for i in range(220)])
    frame["label"] = (frame["Gene.0"] + frame["Gene.1"] > 0).astype(int)
    columns = {c: {"type": "float"} for c in frame.columns[:-1]} | {"label": {"type": "int"}}
    spec = parse_spec(
        {
            "name": "wide",
            "source": {"path": "data/x.csv"},
            "schema": {"columns": columns},
            "target": {"column": "label", "task": "classification"},
            "training": {"min_rows": 100, "families": ["linear"], "budget": {"trials": 2}},
        }
    )
    result = search(spec, model_input(frame, spec), frame["label"])
    assert result.best.cv_score > 0.75


@pytest.mark.parametrize(
    "features",
    [
        pytest.param(
            ["Signal", "Same Number", "same.text", "Empty Number", "empty.text"], id="beside_signal"
        ),
        pytest.param(["colour", "Empty Number"], id="the_only_number_is_empty"),
        pytest.param(["Signal", "empty.text"], id="the_only_text_is_empty"),
    ],
)
def test_constant_and_all_null_columns_numeric_and_text_train_fine(features: list[str]) -> None:
    from mlops_lib.automl import search
    from mlops_lib.datasets import split
    from mlops_lib.metrics import holdout_metrics

    rng = np.random.default_rng(5)
    label = rng.integers(0, 2, 200)
    frame = pd.DataFrame(
        {
            "day": pd.date_range("2026-01-01", periods=200, freq="h", tz="UTC"),
            "Signal": np.where(label == 1, 1.0, -1.0) + rng.normal(0, 0.3, 200),
            "colour": np.where(label == 1, "red", "blue"),
            "Same Number": 7.0,
            "same.text": "constant",
            "Empty Number": np.nan,
            "empty.text": None,
            "label": label,
        }
    )
    types = {"Signal": "float", "colour": "category", "Same Number": "float"}
    types |= {"same.text": "category", "Empty Number": "float", "empty.text": "string"}
    columns = {"day": {"type": "datetime"}} | {f: {"type": types[f]} for f in features}
    spec = parse_spec(
        {
            "name": "flat",
            "source": {"path": "data/x.csv"},
            "schema": {"columns": columns | {"label": {"type": "int"}}, "event_time": "day"},
            "target": {"column": "label", "task": "classification"},
            "training": {"min_rows": 100, "families": ["linear"], "budget": {"trials": 2}},
        }
    )
    frame = coerce(frame[list(spec.schema.columns)], spec)
    report = check_batch(frame, spec, now=pd.Timestamp("2027-01-01", tz="UTC"))
    assert not [v for v in report.violations if v.severity == "blocking"]
    train, holdout = split(frame, spec)
    result = search(spec, model_input(train, spec), train["label"])
    assert result.best.cv_score > 0.9
    model = build_pipeline(spec, make_estimator("random_forest", {}, "classification", 1))
    model.fit(model_input(train, spec), train["label"])
    assert holdout_metrics(model, model_input(holdout, spec), holdout["label"], spec)["f1"] > 0.9
    # A value served in a column that was empty in training does not break the model.
    late = {"Empty Number": 3.0, "empty.text": "new"}
    served = model_input(holdout.head(2), spec).assign(
        **{c: late[c] for c in features if c in late}
    )
    assert model.predict_proba(served).shape == (2, 2)
