"""whylogs profiles: make, (de)serialize, and compare for drift."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from whylogs.core import DatasetProfileView

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")


def _lean_schema():
    """Metrics the platform uses: distributions for numbers, frequent items for strings.

    whylogs' standard resolver also tracks cardinality sketches on every column, which
    doubles the profiling time and is not used by the drift tests (KS, chi-square).
    """
    from whylogs.core.datatypes import Fractional, Integral, String
    from whylogs.core.metrics import StandardMetric
    from whylogs.core.resolvers import MetricSpec, ResolverSpec
    from whylogs.core.schema import DeclarativeSchema

    numeric = [StandardMetric.counts, StandardMetric.types, StandardMetric.distribution]
    text = [
        StandardMetric.counts,
        StandardMetric.types,
        StandardMetric.frequent_items,
        StandardMetric.cardinality,
    ]
    return DeclarativeSchema(
        [
            ResolverSpec(column_type=Integral, metrics=[MetricSpec(m.value) for m in numeric]),
            ResolverSpec(column_type=Fractional, metrics=[MetricSpec(m.value) for m in numeric]),
            ResolverSpec(column_type=String, metrics=[MetricSpec(m.value) for m in text]),
        ]
    )


def profileable(df: pd.DataFrame) -> pd.DataFrame:
    """Datetimes as epoch seconds (whylogs profiles datetime objects one by one, slowly)."""
    from pandas.api import types as pt

    conv = {c: df[c] for c in df.columns if pt.is_datetime64_any_dtype(df[c])}
    if not conv:
        return df
    out = df.copy()
    for c, s in conv.items():
        out[c] = (
            s.astype("int64") // 10**9
            if not s.isna().any()
            else s.map(lambda v: v.timestamp() if v == v else None)
        )
    return out


def profile(df: pd.DataFrame) -> DatasetProfileView:
    """A whylogs profile (mergeable sketch) of a frame."""
    import whylogs as why

    return why.log(profileable(df), schema=_lean_schema()).profile().view()


# Batch profiles are built from a seeded sample of at most this many rows: the drift tests
# (KS, chi-square) have all the power they need there, and profiling stays under a second.
PROFILE_MAX_ROWS = 200_000


def sample(df: pd.DataFrame, max_rows: int = PROFILE_MAX_ROWS) -> pd.DataFrame:
    """A seeded uniform sample of at most ``max_rows`` rows (the frame itself when smaller)."""
    return df if len(df) <= max_rows else df.sample(n=max_rows, random_state=0)


def serialize(view: DatasetProfileView) -> bytes:
    return view.serialize()


def deserialize(data: bytes) -> DatasetProfileView:
    from whylogs.core import DatasetProfileView

    logging.getLogger("whylogs.core.utils.protobuf_utils").setLevel(logging.WARNING)
    return DatasetProfileView.deserialize(data)


def drifted_columns(
    target: DatasetProfileView, reference: DatasetProfileView, *, p_value: float = 0.05
) -> dict[str, dict[str, Any]]:
    """Per-column drift of target against reference (KS numeric, chi-square categorical)."""
    from whylogs.viz.drift.column_drift_algorithms import calculate_drift_scores

    scores = calculate_drift_scores(target_view=target, reference_view=reference)
    out: dict[str, dict[str, Any]] = {}
    for column, score in scores.items():
        if not score:
            continue
        p = float(score.get("pvalue", 1.0))
        out[column] = {
            "algorithm": score.get("algorithm"),
            "p_value": p,
            "statistic": float(score.get("statistic", 0.0)),
            "drift": p < p_value,
        }
    return out
