"""The columnar request form (``columns`` + ``data``) checked against the spec, and the
predictor answering rows and columns with the same numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mlops_lib import demo_data
from mlops_lib.automl import make_estimator
from mlops_lib.features import build_pipeline, model_input, model_target
from mlops_lib.serving.predictor import Predictor
from mlops_lib.serving.schema import (
    ColumnarError,
    column_adapters,
    instance_model,
    validate_columns,
)
from mlops_lib.spec import parse_spec

from .specs import churn_spec


@pytest.fixture(scope="module")
def spec():
    """The demo spec without its ``features:`` (a model with store features:
    tests/unit/test_online_features.py)."""
    return churn_spec()


@pytest.fixture(scope="module")
def adapters(spec):
    return column_adapters(spec)


@pytest.fixture(scope="module")
def fitted(spec):
    df = demo_data.generate("clean", rows=400)
    model = build_pipeline(spec, make_estimator("linear", {}, "classification", 0))
    model.fit(model_input(df, spec), model_target(df, spec))
    return model


def plain(value):
    """A JSON-like value: NumPy scalars as Python ones, NaN as null."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def rows(spec, n: int = 5) -> list[dict]:
    df = demo_data.generate("clean", rows=n)
    return [{k: plain(v) for k, v in r.items()} for r in df[spec.features].to_dict("records")]


def columnar(spec, sent: list[dict], columns: list[str] | None = None) -> tuple[list, list]:
    columns = columns or list(spec.features)
    return columns, [[r[c] for c in columns] for r in sent]


def problems(spec, adapters, columns, data) -> list[dict]:
    with pytest.raises(ColumnarError) as err:
        validate_columns(spec, adapters, columns, data)
    return err.value.errors


def locs(found: list[dict]) -> list[tuple]:
    return [tuple(e["loc"]) for e in found]


# schema ------------------------------------------------------------------------------------


def test_a_valid_request_returns_the_values_by_column(spec, adapters) -> None:
    sent = rows(spec, 4)
    columns, data = columnar(spec, sent)
    values = validate_columns(spec, adapters, columns, data)
    assert list(values) == [*spec.features, *spec.identity]
    for name in spec.features:
        assert values[name] == [r[name] for r in sent]


@pytest.mark.parametrize("gaps", [[], [1], [0, 1, 2, 3, 4, 5]], ids=["full", "a_gap", "all_gaps"])
def test_columns_and_rows_give_the_same_model_input_frame(spec, adapters, gaps) -> None:
    sent = rows(spec, 6)
    for i in gaps:  # nullable columns left empty in some or every row
        sent[i] |= {"monthly_charges": None, "age": None, "region": None}
    instance = instance_model(spec)
    validated_rows = [instance.model_validate(r).model_dump() for r in sent]
    columns, data = columnar(spec, sent, list(reversed(spec.features)))  # any column order
    values = validate_columns(spec, adapters, columns, data)
    predictor = Predictor(spec, None, "1")
    by_rows = predictor.frame_from_rows(validated_rows)
    by_columns = predictor.frame_from_columns(values)
    assert list(by_columns.columns) == list(spec.features)
    pd.testing.assert_frame_equal(by_columns, by_rows)
    # ... and the frame training builds from the same rows (a null category stays None).
    trained_on = model_input(pd.DataFrame(validated_rows), spec)
    pd.testing.assert_frame_equal(by_rows, trained_on)


@pytest.mark.parametrize(
    ("column", "value", "kind"),
    [
        ("tenure_months", "5", "int_type"),  # strict: no string for an int
        ("tenure_months", 5.5, "int_type"),
        ("tenure_months", True, "int_type"),
        ("tenure_months", 73, "less_than_equal"),
        ("support_calls", -1, "greater_than_equal"),
        ("contract", "three_year", "literal_error"),
        ("tenure_months", None, "int_type"),  # not nullable
        ("contract", None, "literal_error"),  # not nullable
        ("monthly_charges", float("nan"), "finite_number"),
        ("monthly_charges", float("inf"), "finite_number"),
        ("total_charges", float("-inf"), "finite_number"),
        ("region", 3, "literal_error"),
    ],
)
def test_a_bad_cell_is_named_by_row_and_column(spec, adapters, column, value, kind) -> None:
    sent = rows(spec, 3)
    sent[2][column] = value
    found = problems(spec, adapters, *columnar(spec, sent))
    assert [(tuple(e["loc"]), e["type"]) for e in found] == [(("data", 2, column), kind)]
    assert found[0]["msg"]


def test_nullable_columns_accept_null(spec, adapters) -> None:
    sent = rows(spec, 2)
    sent[0] |= {"monthly_charges": None, "age": None, "payment_method": None}
    values = validate_columns(spec, adapters, *columnar(spec, sent))
    assert values["monthly_charges"][0] is None and values["payment_method"][0] is None


def test_every_problem_comes_in_one_error(spec, adapters) -> None:
    sent = rows(spec, 4)
    sent[0]["age"] = "old"
    sent[1]["contract"] = "three_year"
    sent[3]["monthly_charges"] = float("nan")
    sent[3]["age"] = 101
    found = problems(spec, adapters, *columnar(spec, sent))
    assert set(locs(found)) == {
        ("data", 0, "age"),
        ("data", 1, "contract"),
        ("data", 3, "monthly_charges"),
        ("data", 3, "age"),
    }
    assert all(set(e) == {"loc", "msg", "type"} for e in found)


def test_an_unknown_a_duplicated_and_a_missing_column_are_each_named(spec, adapters) -> None:
    columns = [c for c in spec.features if c != "region"] + ["planet", "age"]
    data = [[1] * len(columns)]
    found = problems(spec, adapters, columns, data)
    kinds = {(tuple(e["loc"]), e["type"]) for e in found}
    assert kinds == {
        (("columns", len(columns) - 2), "extra_forbidden"),
        (("columns", "age"), "duplicate"),
        (("columns", "region"), "missing"),
    }
    assert "planet" in next(e["msg"] for e in found if e["type"] == "extra_forbidden")


def test_a_row_with_the_wrong_number_of_values_is_named(spec, adapters) -> None:
    columns, data = columnar(spec, rows(spec, 3))
    data[1] = data[1][:-1]
    data[2] = [*data[2], 1]
    found = problems(spec, adapters, columns, data)
    assert [(tuple(e["loc"]), e["type"]) for e in found] == [
        (("data", 1), "row_length"),
        (("data", 2), "row_length"),
    ]


def test_header_and_row_problems_come_together(spec, adapters) -> None:
    columns, data = columnar(spec, rows(spec, 2))
    columns = [*columns[:-1], "planet"]
    data[0] = data[0][:-1]
    found = locs(problems(spec, adapters, columns, data))
    assert ("columns", len(columns) - 1) in found
    assert ("columns", "region") in found
    assert ("data", 0) in found


def test_key_and_event_time_are_optional_and_typed_like_the_spec(spec, adapters) -> None:
    assert spec.identity == ["customer_id", "event_time"]
    sent = rows(spec, 2)
    sent[0] |= {"customer_id": "C-9", "event_time": "2026-11-01T08:00:00Z"}
    sent[1] |= {"customer_id": None, "event_time": None}
    columns = [*spec.features, "customer_id", "event_time"]
    values = validate_columns(spec, adapters, *columnar(spec, sent, columns))
    assert values["customer_id"] == ["C-9", None]
    assert values["event_time"][0].isoformat() == "2026-11-01T08:00:00+00:00"
    assert values["event_time"][1] is None
    # Without them the request is valid too, and they are empty as in the row form.
    absent = validate_columns(spec, adapters, *columnar(spec, sent))
    assert absent["customer_id"] == absent["event_time"] == [None, None]
    sent[0] |= {"customer_id": 9, "event_time": "yesterday"}
    found = locs(problems(spec, adapters, *columnar(spec, sent, columns)))
    assert set(found) == {("data", 0, "customer_id"), ("data", 0, "event_time")}


# predictor ---------------------------------------------------------------------------------


def test_rows_and_columns_are_answered_with_the_same_numbers(spec, adapters, fitted) -> None:
    sent = rows(spec, 5)
    predictor = Predictor(spec, fitted, "7")
    scores = predictor.scores(
        predictor.frame_from_columns(validate_columns(spec, adapters, *columnar(spec, sent)))
    )
    by_rows = predictor.response(scores)
    by_columns = predictor.columnar_response(scores)
    want = fitted.predict_proba(model_input(pd.DataFrame(sent), spec))
    np.testing.assert_allclose(scores, want)

    assert by_rows["model_version"] == by_columns["model_version"] == "7"
    assert by_rows["predictions"] == by_columns["predictions"]
    assert by_rows["predictions"] == fitted.predict(model_input(pd.DataFrame(sent), spec)).tolist()
    assert all(type(p) is int for p in by_rows["predictions"])  # JSON-ready, not NumPy
    assert by_rows["probabilities"] == [{"0": p0, "1": p1} for p0, p1 in want.tolist()]
    assert by_columns["probabilities"] == {"columns": ["0", "1"], "data": want.tolist()}
    assert predictor.log_scores(scores) == want[:, 1].tolist()


def regression_spec():
    columns = {
        "day": {"type": "datetime"},
        "x": {"type": "float"},
        "kind": {"type": "category", "allowed": ["a", "b"]},
        "y": {"type": "float"},
    }
    return parse_spec(
        {
            "name": "prices",
            "source": {"path": "data/x.csv"},
            "schema": {"columns": columns, "event_time": "day"},
            "target": {"column": "y", "task": "regression"},
            "training": {"min_rows": 10},
        }
    )


def test_a_regression_answers_predictions_without_probabilities() -> None:
    spec = regression_spec()
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=60), "kind": rng.choice(["a", "b"], 60)})
    frame["y"] = 3 * frame["x"] + (frame["kind"] == "b")
    model = build_pipeline(spec, make_estimator("linear", {}, "regression", 0))
    model.fit(model_input(frame, spec), model_target(frame, spec))

    values = validate_columns(
        spec, column_adapters(spec), ["kind", "x"], [["a", 1.0], ["b", -2.0], ["a", 0.5]]
    )
    predictor = Predictor(spec, model, "2")
    scores = predictor.scores(predictor.frame_from_columns(values))
    want = model.predict(pd.DataFrame({"x": [1.0, -2.0, 0.5], "kind": ["a", "b", "a"]}))
    for answer in (predictor.response(scores), predictor.columnar_response(scores)):
        assert "probabilities" not in answer
        assert answer["predictions"] == pytest.approx(want.tolist())
        assert all(type(p) is float for p in answer["predictions"])
    assert predictor.log_scores(scores) == pytest.approx(want.tolist())
