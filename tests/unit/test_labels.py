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

from .specs import churn_spec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec():
    return churn_spec()


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
    assert one_class["value"] is None and "more than one class" in one_class["note"]
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


def keyed_spec(spec, key_type: str | None):
    """The churn spec with its key column of another type (or without a key)."""
    data = spec.model_dump(mode="json", by_alias=True)
    if key_type is None:
        data["schema"]["key"] = None
        data["rules"] = [r for r in data["rules"] if r["rule"] != "unique_key"]
    else:
        data["schema"]["columns"]["customer_id"]["type"] = key_type
    return type(spec).model_validate(data)


KEYS = {
    "string": ["C-1", "C-2", "C-3", "C-1", "C-4", None],
    "int": [101, 102, 103, 101, 104, None],
    "datetime": [
        *pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"], utc=True),
        pd.Timestamp("2026-01-01", tz="UTC"),
        pd.Timestamp("2026-01-04", tz="UTC"),
        None,
    ],
}


def served_rows(spec, keys: list | None) -> pd.DataFrame:
    """Six labelled served rows as the prediction log and labels give them: the fourth is
    the first instance served again, the last came without its key."""
    served = demo_data.generate("drifted", rows=6, seed=3)[spec.features]
    served.insert(0, "request_id", ["r1", "r1", "r2", "r3", "r3", "r4"])
    served.insert(1, "row", [0, 1, 0, 0, 1, 0])
    served.insert(2, "ts", pd.date_range("2026-11-27T10:00:00Z", periods=6, freq="min"))
    if keys is not None:
        served["customer_id"] = pd.Series(keys, dtype=object)
    # One instance sent its own event time; the others get the time they were served.
    served["event_time"] = [pd.Timestamp("2026-11-01T00:00:00Z")] + [None] * 5
    served["prediction"], served["score"], served["churned"] = 1, 0.7, [0, 1, 1, 0, 0, 1]
    return served


@pytest.mark.parametrize("key_type", ["string", "int", "datetime"])
def test_production_rows_keep_their_own_key_and_pass_the_gate(spec, key_type: str) -> None:
    from mlops_lib.quality import check_batch

    keyed = keyed_spec(spec, key_type)
    batch, note = production_batch(keyed, served_rows(keyed, KEYS[key_type]))
    assert list(batch.columns) == [*keyed.schema_.columns, "request_id", "row"]
    # The repeated instance keeps its latest labelled row; the keyless one is left out.
    assert batch["customer_id"].tolist() == [KEYS[key_type][i] for i in (1, 2, 3, 4)]
    assert batch["request_id"].tolist() == ["r1", "r2", "r3", "r3"]
    assert batch["row"].tolist() == [1, 0, 0, 1]
    assert "1 rows served without their 'customer_id' left out" in note
    assert "1 earlier rows of instances served again left out" in note
    assert batch["churned"].tolist() == [1, 1, 0, 0]
    # The spec's rules but the batch size and the distribution (six rows).
    rules = [r for r in keyed.rules if r.rule not in ("min_rows", "distribution")]
    assert any(r.rule == "unique_key" for r in rules)
    report = check_batch(batch, keyed.model_copy(update={"rules": rules}), provenance=True)
    assert [v for v in report.violations if v.severity == "blocking"] == []
    assert not [v for v in report.violations if "unexpected columns" in v.message]


def test_production_rows_take_the_event_time_sent_else_the_time_served(spec) -> None:
    served = served_rows(spec, KEYS["string"])
    batch, _ = production_batch(spec, served)
    r3 = batch[(batch["request_id"] == "r3") & (batch["row"] == 0)]
    assert r3["event_time"].tolist() == [pd.Timestamp("2026-11-27T10:03:00Z")]
    served.loc[1, "event_time"] = pd.Timestamp("2026-11-02T00:00:00Z")
    batch, _ = production_batch(spec, served)
    assert batch.loc[batch["request_id"] == "r1", "event_time"].tolist() == [
        pd.Timestamp("2026-11-02T00:00:00Z")
    ]


def test_production_rows_of_a_spec_without_a_key_are_all_kept(spec) -> None:
    keyless = keyed_spec(spec, None)
    batch, note = production_batch(keyless, served_rows(keyless, None))
    assert len(batch) == 6 and note == ""
    assert "customer_id" in batch.columns  # still a column of the schema, not the key
    assert batch["request_id"].tolist() == ["r1", "r1", "r2", "r3", "r3", "r4"]


def test_nothing_new_skips_only_when_no_rows_came_and_training_would_repeat_the_champion() -> None:
    from mlops_lib.continuous_training import nothing_new

    none = {"commit_id": "c" * 64, "production_rows": 0, "note": "no new labels"}
    same = "churn v3 (@champion) was trained on lakeFS churn@cccccccccccc with the same spec"
    reason = nothing_new(none, same)
    assert reason == f"nothing new to learn from: no new labels; {same}"
    assert nothing_new(none, None) is None  # main, the spec or the code moved
    assert nothing_new({"commit_id": "c" * 64, "production_rows": 40}, same) is None


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
