"""Demo use case data: subscription churn, seeded and deterministic.

Scenarios: ``clean``; ``drifted`` (covariate shift in several features and a changed
relation to the target); ``corrupted`` (every fault at once); and one scenario per single
fault (``missing_column``, ``wrong_type``, ``nulls``, ``out_of_range``, ``duplicate_keys``,
``unknown_category``, ``empty``). Each batch has an events table beside it
(:func:`generate_events`, :func:`events_path`): the customers' support tickets, payments and
late payments before their snapshot, which the feature store's views are computed from.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

CONTRACTS = ["month_to_month", "one_year", "two_year"]
PAYMENTS = ["electronic_check", "mailed_check", "bank_transfer", "credit_card"]
INTERNET = ["dsl", "fiber_optic", "none"]
REGIONS = ["north", "south", "east", "west"]
FAULTS = (
    "missing_column",
    "wrong_type",
    "nulls",
    "out_of_range",
    "duplicate_keys",
    "unknown_category",
    "empty",
)
SCENARIOS = ("clean", "drifted", "corrupted", *FAULTS)
DEFAULT_ROWS = 50_000
DEFAULT_END = datetime(2026, 11, 1, tzinfo=UTC)
# Features the drifted scenario shifts; the others keep their distribution.
DRIFTED_FEATURES = ("monthly_charges", "tenure_months", "support_calls", "contract")


def generate(
    scenario: str = "clean",
    *,
    rows: int = DEFAULT_ROWS,
    seed: int = 7,
    end: datetime = DEFAULT_END,
) -> pd.DataFrame:
    """One batch of the demo use case for a scenario (deterministic for a seed)."""
    import numpy as np
    import pandas as pd

    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    rng = np.random.default_rng(seed)
    drifted = scenario == "drifted"
    n = rows

    contract_p = [0.75, 0.15, 0.10] if drifted else [0.5, 0.25, 0.25]
    contract = rng.choice(CONTRACTS, size=n, p=contract_p)
    internet = rng.choice(INTERNET, size=n, p=[0.35, 0.45, 0.20])
    payment = rng.choice(PAYMENTS, size=n, p=[0.35, 0.2, 0.22, 0.23])
    region = rng.choice(REGIONS, size=n)
    age = np.clip(rng.normal(45, 15, n).round(), 18, 95).astype("int64")
    tenure_scale = 12.0 if drifted else 24.0
    tenure = np.clip(rng.exponential(tenure_scale, n).round(), 0, 72).astype("int64")
    base_charge = np.select(
        [internet == "fiber_optic", internet == "dsl"], [85.0, 55.0], default=25.0
    )
    monthly = np.clip(base_charge + rng.normal(25.0 if drifted else 0.0, 12.0, n), 15, 150).round(2)
    total = np.clip(monthly * tenure * rng.normal(1.0, 0.05, n), 0, 12_000).round(2)
    support = rng.poisson(4.0 if drifted else 1.5, n).clip(0, 30).astype("int64")

    contract_effect = np.select(
        [contract == "month_to_month", contract == "one_year"], [1.2, -0.3], default=-1.4
    )
    fiber = (internet == "fiber_optic").astype(float)
    logit = (
        -1.6
        + contract_effect
        - 0.045 * tenure
        + 0.018 * (monthly - 60)
        + 0.35 * support
        + 0.5 * (payment == "electronic_check")
        + (-0.8 if drifted else 0.4) * fiber
        - 0.004 * (age - 45)
    )
    if drifted:
        # The relation changes: support calls matter less, tenure protects less.
        logit += -0.25 * support + 0.03 * tenure
    logit += rng.normal(0, 0.5, n)
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")

    seconds = rng.integers(0, 24 * 3600, n)
    event_time = pd.to_datetime(end) - pd.to_timedelta(seconds, unit="s")
    prefix = f"C{seed:04d}"
    ids = np.char.add(prefix, np.char.zfill(np.arange(n).astype(str), 7))

    df = pd.DataFrame(
        {
            "customer_id": ids,
            "event_time": event_time,
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
            "contract": contract,
            "payment_method": payment,
            "internet_service": internet,
            "support_calls": support,
            "age": age,
            "region": region,
            "churned": churned,
        }
    )
    return _apply_faults(df, scenario, rng)


def _apply_faults(df: pd.DataFrame, scenario: str, rng) -> pd.DataFrame:

    faults = FAULTS[:-1] if scenario == "corrupted" else (scenario,) if scenario in FAULTS else ()
    n = len(df)
    for fault in faults:
        if fault == "missing_column":
            df = df.rename(columns={"support_calls": "n_support_calls"})
        elif fault == "wrong_type":
            df["total_charges"] = df["total_charges"].astype(str)
            bad = rng.choice(n, size=max(1, n // 50), replace=False)
            df.loc[bad, "total_charges"] = "N/A"
        elif fault == "nulls":
            bad = rng.random(n) < 0.2
            df["monthly_charges"] = df["monthly_charges"].mask(bad)
        elif fault == "out_of_range":
            bad = rng.choice(n, size=max(1, n // 100), replace=False)
            df.loc[bad, "age"] = 150
            df.loc[bad[: len(bad) // 2], "tenure_months"] = -5
        elif fault == "duplicate_keys":
            dup = rng.choice(n, size=max(1, n // 100), replace=False)
            df.loc[dup, "customer_id"] = df.loc[(dup + 1) % n, "customer_id"].to_numpy()
        elif fault == "unknown_category":
            bad = rng.choice(n, size=max(1, n // 100), replace=False)
            df.loc[bad, "contract"] = "three_year"
    if scenario == "empty":
        df = df.iloc[0:0]
    return df.reset_index(drop=True) if len(df) else df


def generate_events(batch: pd.DataFrame, *, seed: int = 7, days: int = 90) -> pd.DataFrame:
    """The events of a batch's customers in the ``days`` days before each row's
    ``event_time`` (deterministic for a seed): ``ticket`` (no amount), more with more
    ``support_calls`` and many more in the last 30 days of a churner; monthly ``payment`` of
    about ``monthly_charges``; ``late_payment`` (the owed amount), likelier for churners.
    Columns customer_id, event_time, kind, amount; in batch order, then by time."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng([seed, 0xE7E7])
    customers = _event_customers(batch)
    span = days * DAY_SECONDS
    churner = customers["churned"].to_numpy() == 1
    tickets = rng.poisson(0.3 + 0.5 * customers["support_calls"].to_numpy())
    recent = rng.poisson(np.where(churner, 1.5, 0.2))
    payments = _payments(rng, customers, span)
    parts = [
        _events_before(rng, customers, tickets, span),
        _events_before(rng, customers, recent, min(span, 30 * DAY_SECONDS)),
        payments,
        _late_payments(rng, customers, payments, np.where(churner, 0.25, 0.05)),
    ]
    events = pd.concat(parts, ignore_index=True).sort_values(["row", "seconds"], kind="stable")
    stamps = pd.to_datetime(events["seconds"].to_numpy(), unit="s", utc=True)
    return pd.DataFrame(
        {
            "customer_id": customers["customer_id"].to_numpy()[events["row"]],
            "event_time": stamps.as_unit("us"),  # the batch's unit (Parquet has no seconds)
            "kind": events["kind"].to_numpy(),
            "amount": events["amount"].to_numpy("float64"),
        }
    )


DAY_SECONDS = 86_400


def _event_customers(batch: pd.DataFrame) -> pd.DataFrame:
    """What events are drawn from, per batch row, robust to a faulty batch (a renamed,
    mistyped or null column falls back to a typical value); times in epoch seconds."""
    import pandas as pd

    def number(name: str, default: float) -> pd.Series:
        values = batch[name] if name in batch else pd.Series(default, index=batch.index)
        return pd.to_numeric(values, errors="coerce").fillna(default).astype("float64")

    times = pd.to_datetime(batch["event_time"], utc=True).dt.tz_convert(None)
    return pd.DataFrame(
        {
            "customer_id": batch["customer_id"].to_numpy(),
            "event_time": times.to_numpy("datetime64[s]").view("int64"),
            "support_calls": number("support_calls", 1.5).clip(0, 30).to_numpy(),
            "monthly_charges": number("monthly_charges", 60.0).clip(0, 200).to_numpy(),
            "churned": number("churned", 0).to_numpy(),
        }
    )


def _events_before(
    rng: np.random.Generator, customers: pd.DataFrame, counts: np.ndarray, span: int
) -> pd.DataFrame:
    """``counts[i]`` tickets of batch row i, uniformly in the ``span`` seconds before its
    snapshot (at least a second before it)."""
    import numpy as np
    import pandas as pd

    rows = np.repeat(np.arange(len(customers)), counts)
    seconds = customers["event_time"].to_numpy()[rows] - rng.integers(1, span, len(rows))
    return pd.DataFrame({"row": rows, "seconds": seconds, "kind": "ticket", "amount": np.nan})


def _payments(rng: np.random.Generator, customers: pd.DataFrame, span: int) -> pd.DataFrame:
    """A payment every 30 days inside the span, of about the monthly charge."""
    import numpy as np
    import pandas as pd

    n, month = len(customers), 30 * DAY_SECONDS
    first = rng.integers(1, min(span, month), n)  # seconds before the snapshot
    ago = first[:, None] + month * np.arange(-(-span // month))[None, :]
    rows, which = np.nonzero(ago < span)
    charge = customers["monthly_charges"].to_numpy()[rows]
    amount = (charge * rng.normal(1.0, 0.03, len(rows))).clip(0, 10_000).round(2)
    seconds = customers["event_time"].to_numpy()[rows] - ago[rows, which]
    return pd.DataFrame({"row": rows, "seconds": seconds, "kind": "payment", "amount": amount})


def _late_payments(
    rng: np.random.Generator, customers: pd.DataFrame, payments: pd.DataFrame, p: np.ndarray
) -> pd.DataFrame:
    """A notice for the owed amount 1-10 days after a payment, with probability ``p`` of
    the payment's batch row; notices that would come at or after the snapshot are dropped."""
    late = payments[rng.random(len(payments)) < p[payments["row"]]]
    after = rng.integers(DAY_SECONDS, 10 * DAY_SECONDS, len(late))
    late = late.assign(kind="late_payment", seconds=late["seconds"] + after)
    return late[late["seconds"] < customers["event_time"].to_numpy()[late["row"]]]


def events_path(out: Path) -> Path:
    """Where the events table of a batch written to ``out`` goes."""
    return out.parent / "events" / f"{out.stem}.parquet"


def write(df: pd.DataFrame, out: Path) -> Path:
    """Write a batch as CSV or Parquet, chosen by the file suffix."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        df.to_csv(out, index=False)
    elif out.suffix in (".parquet", ".pq"):
        df.to_parquet(out, index=False)
    else:
        raise ValueError(f"{out}: use a .csv or .parquet file name")
    return out


def yesterday(end: datetime = DEFAULT_END) -> datetime:
    """Start of the demo batch's day."""
    return end - timedelta(days=1)
