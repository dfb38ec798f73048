"""The compiled scoring path: fitted pipelines converted to ONNX score as scikit-learn does
(or keep serving through scikit-learn, with the reason)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_lib.automl import make_estimator
from mlops_lib.demo_data import generate
from mlops_lib.features import build_pipeline, model_input, model_target
from mlops_lib.serving.compiled import (
    MISSING,
    NONE,
    PARITY_TOLERANCE,
    Compiled,
    OnnxScorer,
    compile_pipeline,
)
from mlops_lib.spec import load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]
SMALL = {"n_estimators": 10}  # trees enough to score, few enough to stay fast


def make_spec(columns: dict, target: str, task: str = "classification", **training) -> object:
    return parse_spec(
        {
            "name": "compiled",
            "source": {"path": "data/x.csv"},
            "schema": {"columns": columns},
            "target": {"column": target, "task": task},
            "training": {"min_rows": 10, **training},
        }
    )


def shop(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """Numbers, an int, a bool, two categories and a date; labels of every kind."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "spend": rng.normal(0, 1, rows),
            "visits": rng.integers(0, 10, rows),
            "member": rng.random(rows) < 0.3,
            "plan": rng.choice(["basic", "plus", "pro"], rows),
            "city": rng.choice([f"city-{i}" for i in range(8)], rows),
            "day": pd.date_range("2026-01-01", periods=rows, freq="7h", tz="UTC"),
        }
    )
    signal = frame.spend + (frame.plan == "pro") + frame.member + (frame.day.dt.weekday >= 5)
    frame["bought"] = (signal > 0.5).astype(int)
    frame["tier"] = np.where(signal > 1, "gold", np.where(signal > 0, "silver", "bronze"))
    frame["level"] = np.where(signal > 1, 7, np.where(signal > 0, 3, 1))
    frame["loyal"] = signal > 0.5
    frame["basket"] = 100 * signal + rng.normal(0, 1, rows)
    return frame


SHOP_COLUMNS = {
    "spend": {"type": "float"},
    "visits": {"type": "int"},
    "member": {"type": "bool"},
    "plan": {"type": "category"},
    "city": {"type": "category"},
    "day": {"type": "datetime"},
}
TARGETS = {
    "bought": ({"type": "int"}, "classification"),
    "tier": ({"type": "category"}, "classification"),
    "level": ({"type": "int"}, "classification"),
    "loyal": ({"type": "bool"}, "classification"),
    "basket": ({"type": "float"}, "regression"),
}


def fitted(frame: pd.DataFrame, target: str, family: str, columns: dict | None = None, **training):
    """A pipeline fitted on the first 300 rows, the spec and the model input of the rest."""
    kind, task = TARGETS[target]
    spec = make_spec({**(columns or SHOP_COLUMNS), target: kind}, target, task, **training)
    X, y = model_input(frame, spec), model_target(frame, spec)
    estimator = make_estimator(family, SMALL, task, seed=1)
    return build_pipeline(spec, estimator).fit(X[:300], y[:300]), X[300:]


def sklearn_scores(pipeline, frame: pd.DataFrame) -> np.ndarray:
    if hasattr(pipeline, "predict_proba"):
        return pipeline.predict_proba(frame)
    return pipeline.predict(frame)


def assert_serves_onnx(compiled: Compiled, pipeline, frame: pd.DataFrame) -> None:
    """Serves ONNX, scoring as scikit-learn within the tolerance (relative to the value
    past 1 for a regressor)."""
    assert compiled.runtime == "onnx", compiled.reason
    assert compiled.reason == "" and compiled.rows == len(frame)
    got = OnnxScorer(compiled.onnx, pipeline).scores(frame)
    want = sklearn_scores(pipeline, frame)
    assert got.dtype == np.float64 and got.shape == want.shape
    assert compiled.max_abs_diff == np.max(np.abs(got - want))
    assert np.all(np.abs(got - want) <= PARITY_TOLERANCE * np.maximum(1, np.abs(want)))


@pytest.fixture(scope="module")
def churn():
    spec = load_spec(REPO / "projects" / "churn.yaml")
    frame = generate("clean", rows=500, seed=3)
    return spec, model_input(frame, spec), model_target(frame, spec)


@pytest.mark.parametrize("family", ["linear", "random_forest", "extra_trees"])
def test_each_family_converts_a_binary_churn_model_within_tolerance(churn, family) -> None:
    spec, X, y = churn
    estimator = make_estimator(family, SMALL, "classification", seed=1)
    pipeline = build_pipeline(spec, estimator).fit(X[:400], y[:400])
    compiled = compile_pipeline(pipeline, X[400:])
    assert_serves_onnx(compiled, pipeline, X[400:])
    assert OnnxScorer(compiled.onnx, pipeline).scores(X[400:401]).shape == (1, 2)


@pytest.mark.parametrize("target", ["tier", "level"])
@pytest.mark.parametrize("family", ["linear", "random_forest"])
def test_multiclass_string_and_int_labels_convert(target, family) -> None:
    pipeline, holdout = fitted(shop(), target, family)
    assert list(pipeline.classes_) in (["bronze", "gold", "silver"], [1, 3, 7])
    assert_serves_onnx(compile_pipeline(pipeline, holdout), pipeline, holdout)


@pytest.mark.parametrize("family", ["linear", "random_forest"])
def test_regression_converts_ridge_and_a_forest(family) -> None:
    pipeline, holdout = fitted(shop(), "basket", family)
    compiled = compile_pipeline(pipeline, holdout)
    assert_serves_onnx(compiled, pipeline, holdout)
    assert OnnxScorer(compiled.onnx, pipeline).scores(holdout).shape == (len(holdout),)


def test_bool_labels_convert() -> None:
    pipeline, holdout = fitted(shop(), "loyal", "random_forest")
    assert pipeline.classes_.dtype == bool
    assert_serves_onnx(compile_pipeline(pipeline, holdout), pipeline, holdout)


def with_gaps(frame: pd.DataFrame) -> pd.DataFrame:
    """Gaps of every kind a scoring frame may hold: NaN numbers, None and NaN categories,
    a None bool."""
    out = frame.copy()
    out["member"] = out["member"].astype(object)
    out.iloc[0:10, out.columns.get_loc("spend")] = np.nan
    out.iloc[10:20, out.columns.get_loc("visits")] = np.nan
    out.iloc[20:30, out.columns.get_loc("plan")] = None
    out.iloc[30:40, out.columns.get_loc("city")] = np.nan
    out.iloc[40:50, out.columns.get_loc("member")] = None
    return out


@pytest.mark.parametrize("family", ["linear", "random_forest"])
def test_missing_numbers_and_categories_at_scoring_score_as_sklearn(family) -> None:
    pipeline, holdout = fitted(shop(), "bought", family)
    gappy = with_gaps(holdout)
    assert_serves_onnx(compile_pipeline(pipeline, gappy), pipeline, gappy)


def test_gaps_seen_in_training_score_as_sklearn() -> None:
    """model_input writes a missing category as None, which the encoder learns as a
    category of its own (the imputer fills NaN only): the graph keeps that."""
    frame = shop()
    frame.loc[frame.index[::7], "plan"] = None
    frame.loc[frame.index[::5], "spend"] = np.nan
    pipeline, holdout = fitted(frame, "bought", "linear")
    gappy = with_gaps(holdout)
    assert_serves_onnx(compile_pipeline(pipeline, gappy), pipeline, gappy)


def test_the_feed_holds_float64_numbers_and_strings_with_gap_markers() -> None:
    pipeline, holdout = fitted(shop(), "bought", "linear")
    scorer = OnnxScorer(compile_pipeline(pipeline, holdout).onnx, pipeline)
    feed = scorer.feed(with_gaps(holdout).iloc[[0, 20, 30, 40, 60]])
    assert feed["spend"].dtype == np.float64 and feed["spend"].shape == (5, 1)
    assert np.isnan(feed["spend"][0, 0]) and np.isnan(feed["member"][3, 0])
    assert set(np.unique(feed["member"][[0, 1, 2, 4]])) <= {0.0, 1.0}
    assert feed["plan"][1, 0] == NONE and feed["city"][2, 0] == MISSING
    assert all(isinstance(v, str) for v in feed["city"].ravel())


@pytest.mark.parametrize("encoding", ["onehot", "ordinal"])
def test_an_unseen_category_at_scoring_scores_as_sklearn(encoding) -> None:
    pipeline, holdout = fitted(shop(), "bought", "random_forest", encoding=encoding)
    unseen = holdout.assign(city=["city-new"] * 5 + list(holdout.city[5:]))
    assert_serves_onnx(compile_pipeline(pipeline, unseen), pipeline, unseen)


def many_cities(rows: int = 400) -> pd.DataFrame:
    frame = shop(rows)
    frame["city"] = np.random.default_rng(1).choice([f"city-{i}" for i in range(80)], rows)
    return frame


def test_more_than_50_one_hot_categories_fall_back_naming_the_column() -> None:
    """skl2onnx cannot convert a OneHotEncoder grouping infrequent categories behind an
    imputer: scikit-learn keeps serving."""
    pipeline, holdout = fitted(many_cities(), "bought", "linear")
    compiled = compile_pipeline(pipeline, holdout)
    assert compiled.runtime == "sklearn" and compiled.onnx is None
    assert compiled.reason.startswith("skl2onnx cannot convert LogisticRegression")
    assert "infrequent categories of 'city'" in compiled.reason


def test_more_than_50_ordinal_categories_and_an_unseen_one_convert() -> None:
    pipeline, holdout = fitted(many_cities(), "bought", "random_forest", encoding="ordinal")
    unseen = holdout.assign(city=["city-999"] * 5 + list(holdout.city[5:]))
    assert_serves_onnx(compile_pipeline(pipeline, unseen), pipeline, unseen)


def test_datetime_parts_and_derived_features_are_computed_before_the_graph() -> None:
    columns = {**SHOP_COLUMNS, "day": {"type": "datetime", "parts": ["weekday", "hour"]}}
    derived = {"spend_per_visit": "spend / (visits + 1)", "member_spend": "spend * member"}
    pipeline, holdout = fitted(shop(), "bought", "linear", columns=columns, derived=derived)
    compiled = compile_pipeline(pipeline, holdout)
    assert_serves_onnx(compiled, pipeline, holdout)
    inputs = {i.name for i in OnnxScorer(compiled.onnx, pipeline).session.get_inputs()}
    assert {"day_weekday", "day_hour", "spend_per_visit", "member_spend"} <= inputs
    assert "day" not in inputs


@pytest.mark.parametrize(
    ("target", "family"),
    [("bought", "hist_gradient_boosting"), ("basket", "hist_gradient_boosting")],
)
def test_hist_gradient_boosting_converts(target: str, family: str) -> None:
    pipeline, holdout = fitted(shop(), target, family)
    assert_serves_onnx(compile_pipeline(pipeline, holdout), pipeline, holdout)


def test_an_estimator_without_a_converter_falls_back_naming_it() -> None:
    from sklearn.semi_supervised import LabelSpreading

    pipeline, holdout = fitted(shop(), "bought", "linear")
    pipeline.steps[-1] = ("model", LabelSpreading(kernel="knn"))
    pipeline.fit(holdout, holdout.index % 2)  # any labels: only the conversion is at stake
    compiled = compile_pipeline(pipeline, holdout)
    assert compiled.runtime == "sklearn" and compiled.onnx is None
    assert compiled.reason.startswith("skl2onnx cannot convert LabelSpreading")
    assert "\n" not in compiled.reason and compiled.max_abs_diff is None


def test_a_parity_miss_falls_back_with_the_difference() -> None:
    """A forest scores in float32 in both runtimes, summed in different orders: a tolerance
    of zero cannot hold."""
    pipeline, holdout = fitted(shop(), "bought", "random_forest")
    compiled = compile_pipeline(pipeline, holdout, tolerance=0.0)
    assert compiled.runtime == "sklearn" and compiled.onnx is None
    assert compiled.reason.startswith("parity: probabilities differ by up to")
    assert f"on {len(holdout)} rows" in compiled.reason
    assert 0 < compiled.max_abs_diff < PARITY_TOLERANCE


def test_an_empty_sample_falls_back_with_a_reason() -> None:
    pipeline, holdout = fitted(shop(), "bought", "linear")
    compiled = compile_pipeline(pipeline, holdout.iloc[:0])
    assert compiled == Compiled("sklearn", compiled.reason, None, None, 0)
    assert "no rows" in compiled.reason


def test_the_smoke_test_holds_each_runtime_to_its_tolerance() -> None:
    from mlops_lib.serving.deploy import _parity, _Served

    expected = {
        "predictions": [0, 1],
        "probabilities": [{"0": 0.9, "1": 0.1}, {"0": 0.2, "1": 0.8}],
    }
    near = [{"0": 0.9 + 1e-7, "1": 0.1 - 1e-7}, {"0": 0.2, "1": 0.8}]
    assert _parity(_Served("onnx", [0, 1], near), expected)[0] == ""
    miss, diff = _parity(_Served("sklearn", [0, 1], near), expected)
    assert miss.startswith("probabilities differ") and diff == pytest.approx(1e-7)
    flipped = [{"0": 0.4, "1": 0.6}, {"0": 0.2, "1": 0.8}]
    assert _parity(_Served("onnx", [1, 1], flipped), expected)[0].startswith("probabilities")
    lost_class = [{"0": 0.9}, {"0": 0.2}]
    assert "no score" in _parity(_Served("onnx", [0, 0], lost_class), expected)[0]


def test_served_regression_values_are_held_to_a_relative_tolerance() -> None:
    from mlops_lib.serving.deploy import _parity, _Served

    expected = {"predictions": [1000.0, 0.5]}
    assert _parity(_Served("onnx", [1000.0 + 5e-3, 0.5 + 5e-6]), expected)[0] == ""
    assert _parity(_Served("onnx", [1000.0 + 5e-2, 0.5]), expected)[0].startswith("predictions")
    assert _parity(_Served("onnx", [1000.0]), expected)[0] == "1 answers for 2 rows"


# request columns straight to the graph ------------------------------------------------------


def request_columns(frame: pd.DataFrame) -> dict[str, list]:
    """A model-input frame as a service receives the same rows: validated values by column,
    None for every gap (JSON has no NaN)."""
    return {
        name: [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in values]
        for name, values in frame.astype(object).to_dict(orient="list").items()
    }


@pytest.mark.parametrize("family", ["linear", "random_forest"])
def test_request_columns_score_exactly_as_the_frame_with_gaps_and_derived_features(
    family,
) -> None:
    from mlops_lib.features import input_frame

    derived = {"spend_per_visit": "spend / (visits + 1)", "member_spend": "spend * member"}
    pipeline, holdout = fitted(shop(), "bought", family, derived=derived)
    requests = request_columns(with_gaps(holdout))
    spec = make_spec({**SHOP_COLUMNS, "bought": {"type": "int"}}, "bought", derived=derived)
    frame = input_frame(requests, spec)  # what the service would score without the graph
    compiled = compile_pipeline(pipeline, frame, requests=requests)
    assert_serves_onnx(compiled, pipeline, frame)
    scorer = OnnxScorer(compiled.onnx, pipeline)
    assert scorer.takes_columns
    np.testing.assert_array_equal(scorer.scores_columns(requests), scorer.scores(frame))


def test_request_columns_of_an_unseen_category_and_one_row_score_as_the_frame() -> None:
    pipeline, holdout = fitted(shop(), "bought", "random_forest", encoding="ordinal")
    unseen = holdout.assign(city=["city-new"] * 5 + list(holdout.city[5:])).iloc[[0]]
    scorer = OnnxScorer(compile_pipeline(pipeline, holdout).onnx, pipeline)
    np.testing.assert_array_equal(
        scorer.scores_columns(request_columns(unseen)), scorer.scores(unseen)
    )


def test_datetime_parts_keep_the_frame_path() -> None:
    columns = {**SHOP_COLUMNS, "day": {"type": "datetime", "parts": ["weekday"]}}
    pipeline, holdout = fitted(shop(), "bought", "linear", columns=columns)
    scorer = OnnxScorer(compile_pipeline(pipeline, holdout).onnx, pipeline)
    assert not scorer.takes_columns
    with pytest.raises(ValueError, match="need a frame"):
        scorer.scores_columns(request_columns(holdout))


def test_a_miss_on_the_request_columns_path_falls_back_naming_it() -> None:
    pipeline, holdout = fitted(shop(), "bought", "linear")
    requests = request_columns(holdout)
    requests["spend"] = [None if v is None else v * 3 for v in requests["spend"]]
    compiled = compile_pipeline(pipeline, holdout, requests=requests)
    assert compiled.runtime == "sklearn" and compiled.onnx is None
    assert compiled.reason.startswith("parity (request columns): ")
