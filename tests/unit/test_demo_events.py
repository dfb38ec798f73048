"""The demo's per-customer events: shape, timing, determinism, signal and the source check."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from mlops_lib import demo_data
from mlops_lib.cli import main
from mlops_lib.feature_store.views import check_source, compute_view
from mlops_lib.spec import load_spec

CHURN = Path(__file__).resolve().parents[2] / "projects" / "churn.yaml"


@pytest.fixture(scope="module")
def batch() -> pd.DataFrame:
    return demo_data.generate("clean", rows=5_000, seed=11)


@pytest.fixture(scope="module")
def events(batch: pd.DataFrame) -> pd.DataFrame:
    return demo_data.generate_events(batch, seed=11)


def with_snapshot(events: pd.DataFrame, batch: pd.DataFrame) -> pd.DataFrame:
    snap = batch[["customer_id", "event_time", "churned"]].rename(columns={"event_time": "snap"})
    return events.merge(snap, on="customer_id", validate="many_to_one")


def test_events_have_the_sources_columns_and_types(events: pd.DataFrame) -> None:
    assert list(events.columns) == ["customer_id", "event_time", "kind", "amount"]
    assert str(events["event_time"].dt.tz) == "UTC"
    assert events["amount"].dtype == "float64"
    assert set(events["kind"]) == {"ticket", "payment", "late_payment"}
    assert events.loc[events["kind"] == "ticket", "amount"].isna().all()
    assert events.loc[events["kind"] != "ticket", "amount"].notna().all()


def test_a_customer_has_a_few_events_all_in_the_days_before_its_snapshot(
    events: pd.DataFrame, batch: pd.DataFrame
) -> None:
    joined = with_snapshot(events, batch)
    assert (joined["event_time"] < joined["snap"]).all()
    assert (joined["event_time"] > joined["snap"] - pd.Timedelta(days=90)).all()
    assert 3 <= len(events) / len(batch) <= 8


def test_payments_are_about_the_monthly_charge(events: pd.DataFrame, batch: pd.DataFrame) -> None:
    paid = events[events["kind"] == "payment"].groupby("customer_id")["amount"].mean()
    charge = batch.set_index("customer_id")["monthly_charges"].reindex(paid.index)
    assert ((paid - charge).abs() / charge).median() < 0.05


def test_events_are_deterministic_for_a_seed(batch: pd.DataFrame, events: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(demo_data.generate_events(batch, seed=11), events)
    assert not demo_data.generate_events(batch, seed=12).equals(events)


def test_churners_have_more_recent_tickets_and_late_payments(
    events: pd.DataFrame, batch: pd.DataFrame
) -> None:
    joined = with_snapshot(events, batch)
    recent = joined["event_time"] > joined["snap"] - pd.Timedelta(days=30)
    per = lambda mask: (  # noqa: E731
        joined[mask].groupby("customer_id").size().reindex(batch["customer_id"], fill_value=0)
    )
    churned = batch.set_index("customer_id")["churned"]
    tickets = per(recent & (joined["kind"] == "ticket")).groupby(churned).mean()
    late = per(joined["kind"] == "late_payment").groupby(churned).mean()
    assert tickets[1] > tickets[0] + 0.8
    assert late[1] > 2 * late[0]


def test_events_pass_the_churn_sources_check_and_feed_its_view(events: pd.DataFrame) -> None:
    spec = load_spec(CHURN)
    checked = check_source(events, spec, "customer_events")
    table = compute_view(checked, spec, "customer_activity")
    assert table["customer_id"].nunique() == events["customer_id"].nunique()
    # At the events' own times (not where a window ends), a payment lies in the 90 days.
    at_events = table.merge(
        checked[["customer_id", "event_time"]].rename(columns={"event_time": "event_timestamp"}),
        on=["customer_id", "event_timestamp"],
    )
    assert at_events["payment_mean_90d"].notna().mean() > 0.9


def test_a_faulty_batch_still_gets_events() -> None:
    for scenario in ("missing_column", "nulls", "wrong_type", "duplicate_keys"):
        faulty = demo_data.generate(scenario, rows=200, seed=2)
        assert len(demo_data.generate_events(faulty)) > 200, scenario


def test_the_events_file_sits_in_an_events_folder_beside_the_batch() -> None:
    out = Path("data/churn/2026-11-01.csv")
    assert demo_data.events_path(out) == Path("data/churn/events/2026-11-01.parquet")


def test_demo_data_writes_the_events_beside_the_batch_except_when_empty(tmp_path: Path) -> None:
    out = tmp_path / "churn" / "batch.parquet"
    result = CliRunner().invoke(main, ["demo-data", "clean", "--out", str(out), "--rows", "50"])
    assert result.exit_code == 0, result.output
    events = pd.read_parquet(demo_data.events_path(out))
    assert set(events["customer_id"]) <= set(pd.read_parquet(out)["customer_id"])
    assert "events" in result.output
    empty = tmp_path / "empty" / "batch.parquet"
    result = CliRunner().invoke(main, ["demo-data", "empty", "--out", str(empty)])
    assert result.exit_code == 0, result.output
    assert not demo_data.events_path(empty).exists()
