"""Feature views from an event table: windows, filters, ties and the source check."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops_lib.feature_store.views import (
    EVENT_TIMESTAMP,
    FeatureSourceError,
    check_source,
    compute_view,
    view_columns,
)
from mlops_lib.spec import ProjectSpec, parse_spec

CHURN = Path(__file__).resolve().parents[2] / "projects" / "churn.yaml"
T0 = pd.Timestamp("2026-03-01T12:00:00Z")
DAY = pd.Timedelta(days=1)
FEATURES = {
    "tickets_7d": {"aggregate": "count", "days": 7, "where": {"kind": "ticket"}},
    "events_7d": {"aggregate": "count", "days": 7},
    "paid_7d": {"aggregate": "sum", "column": "amount", "days": 7, "where": {"kind": "payment"}},
    "mean_7d": {"aggregate": "mean", "column": "amount", "days": 7, "where": {"kind": "payment"}},
    "min_7d": {"aggregate": "min", "column": "amount", "days": 7},
    "max_7d": {"aggregate": "max", "column": "amount", "days": 7},
    "last_paid": {"aggregate": "last", "column": "amount", "where": {"kind": "payment"}},
}


@pytest.fixture(scope="module")
def spec() -> ProjectSpec:
    data = yaml.safe_load(CHURN.read_text())
    data["features"]["views"] = {
        "activity": {
            "entity": "customer",
            "source": "customer_events",
            "ttl_days": 30,
            "features": FEATURES,
        }
    }
    data["features"]["model"] = ["activity"]
    return parse_spec(data)


def events(*rows: tuple[str | None, pd.Timestamp, str, float | None]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "event_time", "kind", "amount"])


def view(spec: ProjectSpec, *rows: tuple) -> pd.DataFrame:
    return compute_view(check_source(events(*rows), spec, "customer_events"), spec, "activity")


def at(table: pd.DataFrame, customer: str, when: pd.Timestamp) -> pd.Series:
    hit = table[(table["customer_id"] == customer) & (table[EVENT_TIMESTAMP] == when)]
    assert len(hit) == 1, hit
    return hit.iloc[0]


def test_the_table_is_key_time_then_features_in_spec_order_with_counts_as_integers(spec) -> None:
    table = view(spec, ("b", T0, "ticket", None), ("a", T0 + DAY, "payment", 10.0))
    assert list(table.columns) == ["customer_id", EVENT_TIMESTAMP, *FEATURES]
    assert view_columns(spec, "activity") == list(FEATURES)
    assert str(table[EVENT_TIMESTAMP].dt.tz) == "UTC"
    assert table["tickets_7d"].dtype == "int64" and table["events_7d"].dtype == "int64"
    assert all(table[f].dtype == "float64" for f in FEATURES if not f.endswith("s_7d"))
    assert list(dict.fromkeys(table["customer_id"])) == ["a", "b"]  # sorted by key, then time
    assert table.groupby("customer_id")[EVENT_TIMESTAMP].is_monotonic_increasing.all()


def test_a_window_drops_the_event_exactly_days_before_and_keeps_the_one_at_t(spec) -> None:
    table = view(
        spec,
        ("a", T0 - 7 * DAY, "ticket", None),
        ("a", T0 - 7 * DAY + pd.Timedelta(seconds=1), "ticket", None),
        ("a", T0, "ticket", None),
    )
    assert at(table, "a", T0)["tickets_7d"] == 2
    assert at(table, "a", T0 - 7 * DAY)["tickets_7d"] == 1


def test_where_filters_keep_only_matching_rows(spec) -> None:
    table = view(
        spec,
        ("a", T0 - 2 * DAY, "payment", 30.0),
        ("a", T0 - DAY, "late_payment", 99.0),
        ("a", T0, "ticket", None),
    )
    row = at(table, "a", T0)
    assert row["tickets_7d"] == 1
    assert row["events_7d"] == 3
    assert row["paid_7d"] == 30.0 and row["mean_7d"] == 30.0
    assert row["min_7d"] == 30.0 and row["max_7d"] == 99.0  # unfiltered: every amount


def test_last_is_the_latest_matching_value_at_or_before_t_without_a_window(spec) -> None:
    table = view(
        spec,
        ("a", T0 - 100 * DAY, "payment", 20.0),
        ("a", T0 - 50 * DAY, "late_payment", 70.0),
        ("a", T0, "ticket", None),
        ("a", T0 + DAY, "payment", 25.0),
    )
    assert at(table, "a", T0)["last_paid"] == 20.0  # 100 days old, still the latest payment
    assert at(table, "a", T0 + DAY)["last_paid"] == 25.0
    assert math.isnan(at(table, "a", T0)["paid_7d"])  # its window holds no payment


def test_last_is_missing_before_the_first_matching_row(spec) -> None:
    table = view(spec, ("a", T0, "ticket", None), ("a", T0 + DAY, "payment", 5.0))
    assert math.isnan(at(table, "a", T0)["last_paid"])


def test_every_row_at_the_same_time_counts_for_that_time(spec) -> None:
    table = view(
        spec,
        ("a", T0, "payment", 10.0),
        ("a", T0, "ticket", None),
        ("a", T0, "payment", 30.0),
        ("a", T0, "ticket", None),
    )
    assert len(table) == 2  # one row per entity and distinct time, and the window's end
    row = at(table, "a", T0)
    assert row["tickets_7d"] == 2 and row["events_7d"] == 4
    assert row["paid_7d"] == 40.0 and row["mean_7d"] == 20.0
    assert row["min_7d"] == 10.0 and row["max_7d"] == 30.0
    assert row["last_paid"] == 30.0  # a tie goes to the table's order


def test_entities_are_kept_apart(spec) -> None:
    table = view(
        spec,
        ("a", T0 - DAY, "ticket", None),
        ("b", T0 - DAY, "payment", 50.0),
        ("a", T0, "payment", 10.0),
        ("b", T0, "ticket", None),
    )
    a, b = at(table, "a", T0), at(table, "b", T0)
    assert (a["tickets_7d"], a["paid_7d"], a["last_paid"]) == (1, 10.0, 10.0)
    assert (b["tickets_7d"], b["paid_7d"], b["last_paid"]) == (1, 50.0, 50.0)


def test_an_empty_window_counts_zero_and_leaves_aggregates_missing(spec) -> None:
    table = view(spec, ("a", T0 - 30 * DAY, "payment", 10.0), ("a", T0, "late_payment", 5.0))
    row = at(table, "a", T0)
    assert row["tickets_7d"] == 0
    assert math.isnan(row["paid_7d"]) and math.isnan(row["mean_7d"])
    assert row["last_paid"] == 10.0


def test_values_drop_when_events_leave_their_window(spec) -> None:
    table = view(spec, ("a", T0, "ticket", None), ("a", T0 + DAY, "payment", 10.0))
    after = at(table, "a", T0 + 7 * DAY)  # the ticket has left the 7-day window
    assert (after["tickets_7d"], after["events_7d"], after["paid_7d"]) == (0, 1, 10.0)
    gone = at(table, "a", T0 + 8 * DAY)  # and now the payment has too
    assert gone["events_7d"] == 0 and math.isnan(gone["paid_7d"])
    assert gone["last_paid"] == 10.0  # the latest value has no window


def test_rows_without_a_join_key_are_ignored(spec) -> None:
    events_ = events(("a", T0, "ticket", None), (None, T0, "ticket", None))
    table = compute_view(events_, spec, "activity")  # unchecked: the key column has a null
    assert table["customer_id"].unique().tolist() == ["a"]
    assert at(table, "a", T0)["tickets_7d"] == 1


def test_an_empty_table_gives_an_empty_view_with_the_columns(spec) -> None:
    table = view(spec)
    assert table.empty
    assert list(table.columns) == ["customer_id", EVENT_TIMESTAMP, *FEATURES]


def test_views_match_a_row_by_row_reading_of_the_windows(spec) -> None:
    rng = np.random.default_rng(3)
    n = 400
    kinds = rng.choice(["ticket", "payment", "late_payment"], n)
    raw = events()
    raw["customer_id"] = rng.choice(["a", "b", "c"], n)
    raw["event_time"] = T0 + pd.to_timedelta(rng.integers(0, 40, n) * 12, unit="h")
    raw["kind"] = kinds
    raw["amount"] = np.where(kinds == "ticket", np.nan, rng.integers(1, 100, n).astype(float))
    checked = check_source(raw, spec, "customer_events")
    table = compute_view(checked, spec, "activity")
    seen = set(zip(table["customer_id"], table[EVENT_TIMESTAMP], strict=True))
    assert set(zip(checked["customer_id"], checked["event_time"], strict=True)) <= seen
    for _, row in table.sample(40, random_state=1).iterrows():
        mine = checked[checked["customer_id"] == row["customer_id"]]
        t = row[EVENT_TIMESTAMP]
        week = mine[(mine["event_time"] > t - 7 * DAY) & (mine["event_time"] <= t)]
        paid = week.loc[week["kind"] == "payment", "amount"]
        assert row["tickets_7d"] == (week["kind"] == "ticket").sum()
        assert row["events_7d"] == len(week)
        expected = paid.sum() if len(paid) else np.nan
        assert row["paid_7d"] == pytest.approx(expected, nan_ok=True)
        assert row["max_7d"] == pytest.approx(week["amount"].max(), nan_ok=True)
        before = mine[(mine["event_time"] <= t) & (mine["kind"] == "payment")]
        latest = before.sort_values("event_time", kind="stable")["amount"]
        assert row["last_paid"] == pytest.approx(
            latest.iloc[-1] if len(latest) else np.nan, nan_ok=True
        )


def test_check_source_raises_one_error_listing_every_violation(spec) -> None:
    bad = events(
        ("a", T0, "ticket", None),
        (None, T0, "refund", -5.0),
        ("c", "not a time", "payment", 20_000.0),
        ("d", None, "payment", 1.0),
    )
    with pytest.raises(FeatureSourceError) as err:
        check_source(bad, spec, "customer_events")
    text = str(err.value)
    assert "'customer_events'" in text
    assert len(err.value.problems) == 5, text
    for part in (
        "not_null [customer_id]: nulls in a non-nullable column (1 rows)",
        "types [event_time]",
        "not_null [event_time]",  # the timestamp is required even if nullable were allowed
        "allowed_values [kind]: values not in ['ticket', 'payment', 'late_payment'] (1 rows)",
        "ranges [amount]: values outside [0.0, 10000.0] (2 rows)",
    ):
        assert part in text, text


def test_check_source_names_a_missing_column(spec) -> None:
    with pytest.raises(FeatureSourceError, match=r"required_columns \[amount\]"):
        check_source(
            events(("a", T0, "ticket", None)).drop(columns="amount"), spec, "customer_events"
        )


def test_check_source_types_the_table_as_declared(spec) -> None:
    raw = events(("a", "2026-03-01T12:00:00+01:00", "ticket", None), ("b", str(T0), "payment", 3))
    raw["extra"] = 1
    typed = check_source(raw, spec, "customer_events")
    assert list(typed.columns) == ["customer_id", "event_time", "kind", "amount"]
    assert str(typed["event_time"].dt.tz) == "UTC"
    assert typed["event_time"].iloc[0] == T0 - pd.Timedelta(hours=1)
    assert typed["kind"].dtype == object and typed["customer_id"].dtype == object
    assert typed["amount"].dtype == "float64"


def test_an_unknown_view_or_source_is_named(spec) -> None:
    with pytest.raises(ValueError, match="'nope' is not a feature view"):
        view_columns(spec, "nope")
    with pytest.raises(ValueError, match="'nope' is not a feature source"):
        check_source(events(), spec, "nope")
