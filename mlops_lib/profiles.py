"""whylogs profiles: make, (de)serialize, and compare for drift."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from whylogs.core import DatasetProfileView

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")


def profile(df: pd.DataFrame) -> DatasetProfileView:
    """A whylogs profile (mergeable sketch) of a frame."""
    import whylogs as why

    return why.log(df).profile().view()


def serialize(view: DatasetProfileView) -> bytes:
    return view.serialize()


def deserialize(data: bytes) -> DatasetProfileView:
    from whylogs.core import DatasetProfileView

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
