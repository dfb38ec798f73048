"""Labels of served predictions without services: checks, live metric, production batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_lib import demo_data
from mlops_lib.continuous_training import production_batch
from mlops_lib.labels import check_labels
from mlops_lib.layout import stamp_of
from mlops_lib.metrics import live_metric
from mlops_lib.monitoring.drift import policy
from mlops_lib.spec import load_spec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec():
    return load_spec(REPO / "projects" / "churn.yaml")


def test_a_good_batch_has_no_problems(spec) -> None:
    frame = pd.DataFrame({"request_id": ["a", "a", "b"], "row": [0, 1, 0], "churned": [0, 1, 1]})
    known = {("a", 0), ("a", 1), ("b", 0)}
    assert check_labels(frame, spec, known) == []
    # Without a row column every label is for the request's first instance.
    assert check_labels(frame[frame.row == 0].drop(columns="row"), spec, known) == []


def test_every_problem_of_a_labels_batch_is_listed(spec) -> None:
    frame = pd.DataFrame(
        {
            "request_id": ["a", "a", None, "zzz"],
            "row": [0, 0, 0, -3],
            "churned": [0, 7, None, 1],
        }
    )
    problems = check_labels(frame, spec, {("a", 0)})
    rules = {(v.rule, v.column) for v in problems}
    assert ("labels_unique", "request_id") in rules
    assert ("labels_allowed", "churned") in rules
    assert ("labels_schema", "churned") in rules  # the null label
    assert ("labels_schema", "request_id") in rules  # the null id
    assert ("labels_schema", "row") in rules
    unknown = next(v for v in problems if v.rule == "labels_known")
    assert "zzz:-3" in unknown.examples


def test_missing_columns_are_named(spec) -> None:
    problems = check_labels(pd.DataFrame({"id": [1]}), spec, None)
    assert {v.column for v in problems} == {"request_id", "churned"}


def test_live_metric_is_the_spec_metric_on_labelled_predictions(spec) -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    frame = pd.DataFrame({"churned": y, "score": y * 0.6 + rng.random(400) * 0.5})
    frame["prediction"] = (frame.score > 0.5).astype(int)
    out = live_metric(spec, frame)
    assert out["metric"] == "roc_auc" and out["rows"] == 400
    assert 0.9 < out["value"] <= 1.0
    one_class = live_metric(spec, frame.assign(churned=1))
    assert one_class["value"] is None and "both classes" in one_class["note"]
    assert live_metric(spec, frame.iloc[:0])["note"] == "no labelled predictions"


def test_the_policy_fires_below_the_metric_floor(spec) -> None:
    floored = spec.model_copy(
        update={"monitoring": spec.monitoring.model_copy(update={"metric_floor": 0.75})}
    )
    report = {
        "drifted_features": [],
        "prediction_drift": None,
        "live_metric": {"metric": "roc_auc", "value": 0.61, "rows": 900},
    }
    fired, reason = policy(report, floored)
    assert (
        fired and "live roc_auc 0.6100 on 900 labelled predictions below the floor 0.75" in reason
    )
    report["live_metric"]["value"] = 0.8
    fired, reason = policy(report, floored)
    assert not fired and "live roc_auc 0.8000" in reason


def test_production_batch_has_the_spec_schema(spec) -> None:
    served = demo_data.generate("drifted", rows=5, seed=3)[spec.features]
    served.insert(0, "request_id", ["r1", "r1", "r2", "r3", "r3"])
    served.insert(1, "row", [0, 1, 0, 0, 1])
    served.insert(2, "ts", pd.Timestamp("2026-11-27T10:00:00Z"))
    served["prediction"], served["score"], served["churned"] = 1, 0.7, [0, 1, 1, 0, 0]
    batch = production_batch(spec, served)
    assert list(batch.columns) == list(spec.schema_.columns)
    assert batch["customer_id"].tolist() == ["r1:0", "r1:1", "r2:0", "r3:0", "r3:1"]
    assert batch["churned"].tolist() == [0, 1, 1, 0, 0]


def test_stamps_sort_labels_files_and_production_partitions() -> None:
    assert stamp_of("monitoring/churn/labels/20261127T101500123456.parquet") == (
        "20261127T101500123456"
    )
    assert stamp_of("datasets/churn/production/labels-through=20261127T101500123456/d.parquet") == (
        "20261127T101500123456"
    )


def test_labels_since_a_report_compare_by_utc_stamp() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from mlops_lib.layout import stamp
    from mlops_lib.lineage import stored_time

    # A report time as the lineage store returns it (ISO; naive on SQLite, any offset on
    # PostgreSQL) and a labels file written a second later compare in that order.
    created = stored_time("2026-11-27T10:00:00.000001")
    later = datetime(2026, 11, 27, 11, 0, 1, tzinfo=timezone(timedelta(hours=1)))
    assert stamp(created) == "20261127T100000000001"
    assert stamp(later) > stamp(created)
    assert stamp(stored_time("2026-11-27T11:00:00+01:00")) == stamp(
        datetime(2026, 11, 27, 10, tzinfo=UTC)
    )
