"""Drift statistics and the drift report: per-column tests, the report's content, the policy.

Drift per column: KS (numeric) or chi-square (categorical) p-values, or Hellinger distance
for numeric columns when the spec asks for it; a column drifts when its p-value is below
``monitoring.drift_threshold`` (or its distance above it, for Hellinger). Pure functions of
profiles and the spec: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from mlops_lib.metrics import LOWER_IS_BETTER, LiveMetric
from mlops_lib.monitoring.reference import OUTPUTS
from mlops_lib.spec import ProjectSpec

if TYPE_CHECKING:
    from whylogs.core import DatasetProfileView


class PredictionDrift(TypedDict):
    algorithm: str
    statistic: float
    p_value: float | None


class DriftReport(TypedDict):
    """What a monitor run saw; stored as JSON in lakeFS and MLflow (``report.json``)."""

    project: str
    model_version: str
    windows: list[str]
    method: str
    threshold: float
    rows: int
    columns: dict[str, dict[str, Any]]
    drifted_features: list[str]
    missing_columns: list[str]
    prediction_drift: PredictionDrift | None
    notes: list[str]
    # Store features whose served values differ from the training set's: training/serving
    # skew (the online store and the point-in-time join disagree), not drift of the world.
    skewed_features: NotRequired[list[str]]
    live_metric: NotRequired[LiveMetric]
    fired: NotRequired[bool]
    reason: NotRequired[str]
    created_at: NotRequired[str]


@dataclass
class ColumnDrift:
    column: str
    algorithm: str
    statistic: float
    p_value: float | None
    drift: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "drift": self.drift,
        }


def drift_scores(
    target: DatasetProfileView,
    reference: DatasetProfileView,
    *,
    method: str = "auto",
    threshold: float = 0.05,
    categorical: set[str] | None = None,
) -> dict[str, ColumnDrift]:
    """Per-column drift of ``target`` against ``reference`` (columns both profiles hold).

    ``method``: ``auto`` (KS numeric, chi-square categorical), ``ks``, ``chi2`` or
    ``hellinger`` (numeric columns; categorical ones keep chi-square). Categorical columns
    get a two-sample chi-square test of homogeneity on their value counts.
    """
    # whylogs' viz module imports IPython: kept out of DAG parsing and CLI start-up.
    from whylogs.viz.drift.column_drift_algorithms import KS, Hellinger, calculate_drift_scores

    categorical = categorical or set()
    columns = set(target.get_columns()) & set(reference.get_columns())
    drift_map: dict[str, Any] = {}
    for column in columns - categorical:
        if method == "hellinger":
            drift_map[column] = Hellinger()
        elif method == "ks":
            drift_map[column] = KS()
    numeric = columns - categorical
    scores = calculate_drift_scores(
        target_view=target, reference_view=reference, drift_map=drift_map or None
    )
    out: dict[str, ColumnDrift] = {}
    for column in sorted(columns):
        if column in categorical or (method == "chi2" and column not in numeric):
            found = _chi2_homogeneity(target, reference, column)
            if found is not None:
                statistic, p = found
                out[column] = ColumnDrift(column, "chi2", statistic, p, p < threshold)
            continue
        score = scores.get(column)
        if not score:
            continue
        algorithm = str(score.get("algorithm"))
        statistic = float(score.get("statistic", 0.0))
        if algorithm.lower().startswith("hellinger"):
            out[column] = ColumnDrift(column, algorithm, statistic, None, statistic > threshold)
        elif algorithm.lower().startswith("chi"):
            # whylogs' own chi-square treats the reference shares as exact (one-sample
            # goodness of fit): with a small reference it flags stable columns. Use ours.
            found = _chi2_homogeneity(target, reference, column)
            if found is not None:
                out[column] = ColumnDrift(column, "chi2", found[0], found[1], found[1] < threshold)
        else:
            p = float(score.get("pvalue", 1.0))
            out[column] = ColumnDrift(column, algorithm, statistic, p, p < threshold)
    return out


def _counts(view: DatasetProfileView, column: str) -> dict[str, float]:
    col = view.get_column(column)
    freq = col.get_metric("frequent_items") if col is not None else None
    if freq is None:
        return {}
    return {i.value: float(i.est) for i in freq.to_summary_dict().get("frequent_strings") or []}


def _chi2_homogeneity(
    target: DatasetProfileView, reference: DatasetProfileView, column: str
) -> tuple[float, float] | None:
    """Two-sample chi-square test of homogeneity on the columns' value counts.

    Both samples' variance counts (a contingency table), unlike a goodness-of-fit test
    against the reference shares. Values seen in only one sample count as zero in the other.
    """
    from scipy.stats import chi2_contingency  # heavy: kept out of DAG parsing

    ref, tgt = _counts(reference, column), _counts(target, column)
    if not ref or not tgt:
        return None
    values = sorted(set(ref) | set(tgt))
    if len(values) < 2:
        return 0.0, 1.0
    table = [[ref.get(v, 0.0) for v in values], [tgt.get(v, 0.0) for v in values]]
    statistic, p, _, _ = chi2_contingency(table)
    return float(statistic), float(p)


def column_summary(view: DatasetProfileView, column: str) -> dict[str, Any]:
    """Count, nulls and either quantiles (numeric) or top values (categorical) of a column."""
    col = view.get_column(column)
    out: dict[str, Any] = {"count": 0, "nulls": 0}
    if col is None:
        return out
    counts = col.get_metric("counts")
    if counts is not None:
        out["count"] = int(counts.n.value)
        out["nulls"] = int(counts.null.value)
    dist = col.get_metric("distribution")
    if dist is not None and dist.kll.value is not None and not dist.kll.value.is_empty():
        qs = (0.05, 0.25, 0.5, 0.75, 0.95)
        out["quantiles"] = dict(
            zip(map(str, qs), map(float, dist.kll.value.get_quantiles(qs)), strict=True)
        )
    freq = col.get_metric("frequent_items")
    if freq is not None:
        items = freq.to_summary_dict().get("frequent_strings") or []
        out["top"] = {i.value: int(i.est) for i in items[:8]}
    return out


def drift_report(
    spec: ProjectSpec,
    reference: DatasetProfileView,
    target: DatasetProfileView | None,
    *,
    model_version: int | str,
    windows: list[str],
) -> DriftReport:
    """What the monitor saw: per-column drift, prediction drift, missing and new columns.

    A window with no traffic (``target`` None) gives a report that says so, not an error.
    """
    m = spec.monitoring
    expected = [*spec.model_inputs, *OUTPUTS]
    report: DriftReport = {
        "project": spec.name,
        "model_version": str(model_version),
        "windows": windows,
        "method": m.method,
        "threshold": m.drift_threshold,
        "rows": 0,
        "columns": {},
        "drifted_features": [],
        "missing_columns": [],
        "prediction_drift": None,
        "notes": [],
    }
    if target is None:
        report["notes"].append("no traffic in the monitored windows")
        return report
    seen = set(target.get_columns())
    report["missing_columns"] = [c for c in expected if c not in seen]
    categorical = {c for c, col in spec.schema_.columns.items() if col.type == "category"}
    scores = drift_scores(
        target, reference, method=m.method, threshold=m.drift_threshold, categorical=categorical
    )
    for column in expected:
        if column in seen:
            entry = _column_entry(report, reference, target, column, column in categorical)
            if column in scores:
                entry |= scores[column].as_dict()
            report["columns"][column] = entry
    report["drifted_features"] = [
        c for c in spec.features if report["columns"].get(c, {}).get("drift")
    ]
    if spec.store_features:
        report["skewed_features"] = [
            c for c in spec.store_features if report["columns"].get(c, {}).get("drift")
        ]
    score = report["columns"].get("score", {})
    if "statistic" in score:
        report["prediction_drift"] = {
            "algorithm": score["algorithm"],
            "statistic": score["statistic"],
            "p_value": score["p_value"],
        }
    for column in report["missing_columns"]:
        report["notes"].append(f"{column}: missing from production data")
    return report


def _column_entry(
    report: DriftReport,
    reference: DatasetProfileView,
    target: DatasetProfileView,
    column: str,
    categorical: bool,
) -> dict[str, Any]:
    """Both summaries of a column; notes all-null columns and never-seen categories."""
    ref_sum, tgt_sum = column_summary(reference, column), column_summary(target, column)
    entry: dict[str, Any] = {"reference": ref_sum, "target": tgt_sum}
    report["rows"] = max(report["rows"], tgt_sum["count"])
    if tgt_sum["count"] and tgt_sum["nulls"] == tgt_sum["count"]:
        report["notes"].append(f"{column}: every value is null")
    new = sorted(set(tgt_sum.get("top", {})) - set(ref_sum.get("top", {})))
    if new and categorical:
        entry["new_values"] = new
        report["notes"].append(f"{column}: values never seen in training: {new}")
    return entry


def policy(report: DriftReport, spec: ProjectSpec) -> tuple[bool, str]:
    """Whether the spec's drift policy fires on a report, and why (or why not)."""
    m = spec.monitoring
    reasons = []
    drifted = report["drifted_features"]
    if len(drifted) >= m.min_drifted_features:
        reasons.append(
            f"{len(drifted)} features drifted ({', '.join(drifted)}), "
            f"policy fires at {m.min_drifted_features}"
        )
    pred = report.get("prediction_drift")
    if (
        m.prediction_drift_limit is not None
        and pred
        and pred["statistic"] > m.prediction_drift_limit
    ):
        p = pred.get("p_value")
        if p is None or p < m.drift_threshold:
            reasons.append(
                f"prediction drift {pred['statistic']:.3f} above {m.prediction_drift_limit}"
            )
    live = report.get("live_metric") or {}
    if m.metric_floor is not None and live.get("value") is not None:
        lower = live["metric"] in LOWER_IS_BETTER
        if live["value"] > m.metric_floor if lower else live["value"] < m.metric_floor:
            reasons.append(
                f"live {live['metric']} {live['value']:.4f} on {live['rows']} labelled "
                f"predictions {'above' if lower else 'below'} the floor {m.metric_floor}"
            )
    if reasons:
        return True, "; ".join(reasons)
    return False, (
        f"{len(drifted)} drifted features (policy fires at {m.min_drifted_features})"
        + (f", prediction drift {pred['statistic']:.3f}" if pred else "")
        + (f", live {live['metric']} {live['value']:.4f}" if live.get("value") is not None else "")
    )
