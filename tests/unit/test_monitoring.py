"""Monitoring logic without services: windows to profile, reference frames, drift scores."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_lib import demo_data, layout, profiles
from mlops_lib.layout import window_of
from mlops_lib.monitoring.drift import drift_scores
from mlops_lib.monitoring.reference import monitored_frame, reference_frame
from mlops_lib.monitoring.windows import merge, windows_to_profile
from mlops_lib.spec import parse_spec

from .specs import churn_spec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec():
    return churn_spec()


def test_window_of_paths() -> None:
    hour = window_of("monitoring/churn/predictions/date=2026-11-27/hour=09/x.parquet")
    assert hour == datetime(2026, 11, 27, 9, tzinfo=UTC)
    assert window_of("monitoring/churn/reference/v1/profile.bin") is None


def test_only_closed_unprofiled_windows_are_profiled_once() -> None:
    p = "monitoring/churn/predictions/date=2026-11-27/hour={:02d}/{}.parquet"
    logs = [p.format(8, "a"), p.format(8, "b"), p.format(9, "c"), p.format(10, "d")]
    now = datetime(2026, 11, 27, 10, 30, tzinfo=UTC)
    todo = windows_to_profile(logs, {}, now)
    assert list(todo) == [
        datetime(2026, 11, 27, 8, tzinfo=UTC),
        datetime(2026, 11, 27, 9, tzinfo=UTC),
    ]
    assert len(todo[datetime(2026, 11, 27, 8, tzinfo=UTC)]) == 2
    again = windows_to_profile(logs, {h: len(paths) for h, paths in todo.items()}, now)
    assert again == {}


def test_a_window_is_profiled_again_with_files_shipped_late() -> None:
    p = "monitoring/churn/predictions/date=2026-11-27/hour=08/{}.parquet"
    eight = datetime(2026, 11, 27, 8, tzinfo=UTC)
    now = datetime(2026, 11, 27, 12, tzinfo=UTC)
    late = [p.format("a"), p.format("b"), p.format("late")]
    todo = windows_to_profile(late, {eight: 2}, now)
    assert todo == {eight: late}
    stored = layout.window_profile_path("churn", eight, 3)
    assert stored.endswith("date=2026-11-27/hour=08/profile-3.bin")
    assert layout.profiled_files(stored) == 3
    assert layout.profiled_files(stored.replace("profile-3", "profile")) == 0


def test_reference_frame_carries_prediction_and_score(spec) -> None:
    from sklearn.linear_model import LogisticRegression

    from mlops_lib.features import build_pipeline, model_input

    df = demo_data.generate("clean", rows=2000, seed=5)
    model = build_pipeline(spec, LogisticRegression(max_iter=300))
    model.fit(model_input(df, spec), df["churned"])
    ref = reference_frame(spec, model, df.head(100))
    assert list(ref.columns) == [*spec.features, "prediction", "score"]
    assert set(ref["prediction"]) <= {0, 1} and ref["score"].between(0, 1).all()


def _houses(rows: int, seed: int, size_scale: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    size = rng.normal(100, 20, rows) * size_scale
    rooms = rng.integers(1, 6, rows)
    return pd.DataFrame(
        {"size": size, "rooms": rooms, "price": 3 * size + 10 * rooms + rng.normal(0, 5, rows)}
    )


def test_prediction_drift_of_a_regression_is_measured_on_its_predicted_values() -> None:
    from sklearn.linear_model import LinearRegression

    from mlops_lib.features import build_pipeline, model_input
    from mlops_lib.monitoring.drift import drift_report, policy

    columns = {"size": {"type": "float"}, "rooms": {"type": "int"}, "price": {"type": "float"}}
    spec = parse_spec(
        {
            "name": "prices",
            "source": {"path": "data/x.csv"},
            "schema": {"columns": columns},
            "target": {"column": "price", "task": "regression"},
            "training": {"min_rows": 10},
        }
    )
    train = _houses(2000, seed=0)
    model = build_pipeline(spec, LinearRegression()).fit(model_input(train, spec), train["price"])
    holdout = _houses(3000, seed=1)
    ref = reference_frame(spec, model, holdout)
    predicted = model.predict(model_input(holdout, spec))
    # No probabilities: the score is the predicted value, as the prediction log keeps it.
    np.testing.assert_allclose(ref["score"], predicted)
    np.testing.assert_allclose(ref["prediction"], predicted)
    reference = profiles.profile(monitored_frame(spec, ref))

    def report_on(served: pd.DataFrame) -> dict:
        target = profiles.profile(monitored_frame(spec, reference_frame(spec, model, served)))
        return drift_report(spec, reference, target, model_version=1, windows=["w1"])

    stable = report_on(_houses(1000, seed=2))
    assert stable["prediction_drift"]["algorithm"].lower() == "ks"
    assert stable["prediction_drift"]["p_value"] > 0.05 and not policy(stable, spec)[0]
    median = stable["columns"]["score"]["reference"]["quantiles"]["0.5"]
    assert median == pytest.approx(np.median(predicted), rel=0.02)  # prices, not probabilities
    # Bigger houses are served: predicted prices move up, and that alone fires the policy.
    moved = report_on(_houses(1000, seed=2, size_scale=1.3))
    drift = moved["prediction_drift"]
    assert drift["statistic"] > spec.monitoring.prediction_drift_limit and drift["p_value"] < 0.05
    assert moved["drifted_features"] == ["size"]  # one feature: below the policy's 2
    assert spec.monitoring.min_drifted_features == 2
    fired, reason = policy(moved, spec)
    assert fired and reason.startswith("prediction drift")


def test_drift_is_found_on_shifted_features_not_on_stable_ones(spec) -> None:
    both = demo_data.generate("clean", rows=25_000, seed=1).sample(frac=1.0, random_state=0)
    clean, same = both.iloc[:20_000], both.iloc[20_000:].reset_index(drop=True)
    shifted = same.copy()
    shifted["monthly_charges"] = shifted["monthly_charges"] * 1.6
    shifted["contract"] = np.where(
        np.arange(len(shifted)) % 3 == 0, "month_to_month", shifted["contract"]
    )
    categorical = {c for c, col in spec.schema_.columns.items() if col.type == "category"}
    ref = profiles.profile(monitored_frame(spec, clean))
    stable = drift_scores(
        profiles.profile(monitored_frame(spec, same)), ref, categorical=categorical, threshold=0.01
    )
    assert not any(d.drift for d in stable.values()), {
        c: d.p_value for c, d in stable.items() if d.drift
    }
    moved = drift_scores(
        profiles.profile(monitored_frame(spec, shifted)),
        ref,
        categorical=categorical,
        threshold=0.01,
    )
    assert moved["monthly_charges"].drift and moved["monthly_charges"].algorithm.lower() == "ks"
    assert moved["contract"].drift and "chi" in moved["contract"].algorithm.lower()
    assert not moved["age"].drift and not moved["region"].drift


def test_hellinger_distance_for_numeric_columns(spec) -> None:
    a = pd.DataFrame({"x": np.random.default_rng(0).normal(0, 1, 5000)})
    b = pd.DataFrame({"x": np.random.default_rng(1).normal(2, 1, 5000)})
    scores = drift_scores(
        profiles.profile(b), profiles.profile(a), method="hellinger", threshold=0.2
    )
    assert scores["x"].algorithm.lower().startswith("hellinger")
    assert scores["x"].p_value is None and scores["x"].drift


def test_missing_columns_are_left_out_not_an_error(spec) -> None:
    df = demo_data.generate("clean", rows=500, seed=3).drop(columns=["age"])
    assert "age" not in monitored_frame(spec, df).columns


def test_window_profiles_merge(spec) -> None:
    a = profiles.profile(pd.DataFrame({"x": [1.0, 2.0]}))
    b = profiles.profile(pd.DataFrame({"x": [3.0]}))
    merged = merge([a, b])
    assert merged.get_column("x").get_metric("counts").n.value == 3
    assert merge([]) is None


def test_drift_report_names_drift_new_values_nulls_and_missing_columns(spec) -> None:
    from mlops_lib.monitoring.drift import drift_report
    from mlops_lib.monitoring.report import render_html

    both = demo_data.generate("clean", rows=25_000, seed=1).sample(frac=1.0, random_state=0)
    ref_df, prod = both.iloc[:20_000], both.iloc[20_000:].reset_index(drop=True).copy()
    ref_df = ref_df.assign(prediction=0, score=0.3)
    prod["tenure_months"] = prod["tenure_months"] // 4
    prod["support_calls"] = prod["support_calls"] + 6
    prod["region"] = np.where(np.arange(len(prod)) % 2 == 0, "mars", prod["region"])
    prod["monthly_charges"] = None
    prod = prod.drop(columns=["age"]).assign(prediction=0, score=0.3)
    reference = profiles.profile(monitored_frame(spec, ref_df))
    target = profiles.profile(monitored_frame(spec, prod))
    report = drift_report(spec, reference, target, model_version=3, windows=["w1"])
    assert {"tenure_months", "support_calls"} <= set(report["drifted_features"])
    assert "age" in report["missing_columns"]
    assert any("monthly_charges: every value is null" in n for n in report["notes"])
    assert "mars" in report["columns"]["region"].get("new_values", [])
    assert report["prediction_drift"] is not None and report["rows"] == len(prod)
    html = render_html(report)
    assert "<svg" in html and "tenure_months" in html and "DRIFT" in html


def test_report_of_a_window_without_traffic(spec) -> None:
    from mlops_lib.monitoring.drift import drift_report
    from mlops_lib.monitoring.report import render_html

    reference = profiles.profile(monitored_frame(spec, demo_data.generate("clean", rows=500)))
    report = drift_report(spec, reference, None, model_version=1, windows=[])
    assert report["notes"] == ["no traffic in the monitored windows"]
    assert report["drifted_features"] == [] and "no traffic" in render_html(report)


def _report(i: int, minutes: int, fired: bool = True, **kw) -> dict:
    base = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    created = (base + pd.Timedelta(minutes=minutes)).isoformat()
    return {
        "id": i,
        "fired": fired,
        "reason": f"r{i}",
        "created_at": created,
        "handled_by": "",
        "handled_at": None,
    } | kw


def test_one_drift_episode_causes_one_retraining() -> None:
    from datetime import timedelta

    from mlops_lib.continuous_training import pending_drift

    hour = timedelta(minutes=60)
    base = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    # Nothing fired: nothing to do.
    assert pending_drift([_report(1, 0, fired=False)], hour, base)[0] is None
    # A fired report: act on it.
    report, why = pending_drift([_report(1, 0)], hour, base)
    assert report["id"] == 1 and "r1" in why
    # It was claimed at 12:00; a second fired report at 12:20 is the same episode.
    claimed = _report(1, 0, handled_by="ct-run-1", handled_at=base.isoformat())
    later = base + timedelta(minutes=25)
    report, why = pending_drift([_report(2, 20), claimed], hour, later)
    assert report is None and "same episode" in why
    # A report fired after the cooldown starts a new episode.
    much_later = base + timedelta(minutes=90)
    report, _ = pending_drift([_report(3, 75), _report(2, 20), claimed], hour, much_later)
    assert report["id"] == 3


def test_drift_metrics_of_any_column_name_are_names_mlflow_accepts() -> None:
    import re

    from mlops_lib.monitoring.report import _mlflow_metrics

    report = {
        "rows": 10,
        "drifted_features": [],
        "columns": {"sepal length (cm)": {"p_value": 0.5, "statistic": 0.1}},
    }
    names = list(_mlflow_metrics(report))
    assert "p_value.sepal length _cm_" in names
    assert all(re.fullmatch(r"[A-Za-z0-9_\-. :/]+", n) for n in names), names


def test_served_store_features_unlike_the_training_sets_are_reported_as_skew() -> None:
    from mlops_lib.monitoring.drift import drift_report
    from mlops_lib.monitoring.report import render_html

    spec = churn_spec(features=True)
    rng = np.random.default_rng(5)
    rows = demo_data.generate("clean", rows=8_000, seed=4)
    for name in spec.store_features:
        rows[name] = rng.poisson(2.0, len(rows)).astype("float64")
    ref_df, prod = rows.iloc[:5_000], rows.iloc[5_000:].reset_index(drop=True).copy()
    ref_df = ref_df.assign(prediction=0, score=0.3)
    # Served: the tickets count as the online store gave it, far from the training set's.
    prod["customer_activity__tickets_30d"] = prod["customer_activity__tickets_30d"] + 5
    prod = prod.assign(prediction=0, score=0.3)
    reference = profiles.profile(monitored_frame(spec, ref_df))
    target = profiles.profile(monitored_frame(spec, prod))
    report = drift_report(spec, reference, target, model_version=1, windows=["w1"])
    assert report["skewed_features"] == ["customer_activity__tickets_30d"]
    assert "customer_activity__tickets_30d" not in report["drifted_features"]
    assert "skewed (served vs training set): <b>customer_activity__tickets_30d" in render_html(
        report
    )


def test_a_project_without_store_features_reports_no_skew(spec) -> None:
    from mlops_lib.monitoring.drift import drift_report

    reference = profiles.profile(monitored_frame(spec, demo_data.generate("clean", rows=500)))
    target = profiles.profile(monitored_frame(spec, demo_data.generate("clean", rows=500)))
    assert "skewed_features" not in drift_report(
        spec, reference, target, model_version=1, windows=[]
    )
