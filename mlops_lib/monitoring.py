"""Monitoring: reference and production whylogs profiles, and drift scores between them.

* The **reference** of a model version is a profile of its holdout rows (the spec's features,
  the model's prediction and score), kept as an MLflow artifact of the version's run and in
  lakeFS (branch ``monitoring``, ``monitoring/<project>/reference/v<version>/profile.bin``).
* **Production** profiles are made per hour window from the prediction log
  (``monitoring/<project>/predictions/date=../hour=..``) into
  ``monitoring/<project>/profiles/date=../hour=../profile.bin``; a window is profiled once,
  after it has closed. Profiles are mergeable: a monitor run merges the windows it covers.
* **Drift** per column: KS (numeric) or chi-square (categorical) p-values, or Hellinger
  distance for numeric columns when the spec asks for it; a column drifts when its p-value
  is below ``monitoring.drift_threshold`` (or its distance above it, for Hellinger).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mlops_lib.serving.prediction_log import MONITORING_BRANCH, predictions_prefix
from mlops_lib.settings import Settings, get_settings
from mlops_lib.spec import ProjectSpec

if TYPE_CHECKING:
    import pandas as pd
    from whylogs.core import DatasetProfileView

OUTPUTS = ("prediction", "score")


class NothingToMonitor(RuntimeError):
    """No champion, or a champion without a reference profile: nothing to compare with."""


_WINDOW = re.compile(r"date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/")


def reference_path(project: str, version: int | str) -> str:
    return f"monitoring/{project}/reference/v{version}/profile.bin"


def profiles_prefix(project: str) -> str:
    return f"monitoring/{project}/profiles/"


def window_profile_path(project: str, hour: datetime) -> str:
    return f"{profiles_prefix(project)}date={hour:%Y-%m-%d}/hour={hour:%H}/profile.bin"


def window_of(path: str) -> datetime | None:
    """The hour window an object path belongs to (``date=../hour=..``), if any."""
    m = _WINDOW.search(path)
    if not m:
        return None
    return datetime.strptime(f"{m.group(1)} {m.group(2)}", "%Y-%m-%d %H").replace(tzinfo=UTC)


def monitored_frame(spec: ProjectSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """The columns monitoring compares: the spec's features and the model's outputs.

    Missing columns stay missing (the report says so) rather than failing the profile.
    """
    cols = [c for c in (*spec.features, *OUTPUTS) if c in frame.columns]
    return frame[cols]


def reference_frame(spec: ProjectSpec, model: Any, rows: pd.DataFrame) -> pd.DataFrame:
    """Holdout rows with the model's prediction and score, as served rows are logged."""
    import numpy as np

    from mlops_lib.features import model_input

    out = rows[list(spec.features)].copy()
    x = model_input(rows, spec)
    if spec.target.task == "classification" and hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(x))
        classes = [c.item() if hasattr(c, "item") else c for c in model.classes_]
        out["prediction"] = [classes[i] for i in proba.argmax(axis=1)]
        out["score"] = proba[:, -1]
    else:
        pred = np.asarray(model.predict(x), dtype="float64")
        out["prediction"] = pred
        out["score"] = pred
    return out


def windows_to_profile(
    log_paths: list[str], profiled: set[datetime], now: datetime
) -> dict[datetime, list[str]]:
    """Closed hour windows with logged predictions and no profile yet, with their files."""
    todo: dict[datetime, list[str]] = {}
    for path in log_paths:
        hour = window_of(path)
        if hour is None or hour in profiled or hour + timedelta(hours=1) > now:
            continue
        todo.setdefault(hour, []).append(path)
    return dict(sorted(todo.items()))


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
    from scipy.stats import chi2_contingency

    ref, tgt = _counts(reference, column), _counts(target, column)
    if not ref or not tgt:
        return None
    values = sorted(set(ref) | set(tgt))
    if len(values) < 2:
        return 0.0, 1.0
    table = [[ref.get(v, 0.0) for v in values], [tgt.get(v, 0.0) for v in values]]
    statistic, p, _, _ = chi2_contingency(table)
    return float(statistic), float(p)


def merge(views: list[DatasetProfileView]) -> DatasetProfileView | None:
    """One profile of several windows (None when there are none)."""
    merged = None
    for view in views:
        merged = view if merged is None else merged.merge(view)
    return merged


# lakeFS side -----------------------------------------------------------------------
def save_reference(
    project: str,
    version: int | str,
    frame: pd.DataFrame,
    *,
    run_id: str | None = None,
    settings: Settings | None = None,
) -> str:
    """Profile a reference frame; store it in lakeFS (committed) and as an MLflow artifact.

    Returns the lakeFS path.
    """
    import tempfile
    from pathlib import Path

    from mlops_lib import profiles
    from mlops_lib import versioning as vc

    settings = settings or get_settings()
    data = profiles.serialize(profiles.profile(profiles.sample(frame)))
    _monitoring_branch(project, settings)
    path = reference_path(project, version)
    vc.upload(project, MONITORING_BRANCH, path, data, "application/octet-stream", settings)
    vc.commit(
        project,
        MONITORING_BRANCH,
        f"reference profile of {project} v{version}",
        {"model_version": str(version), "rows": str(len(frame))},
        settings,
    )
    if run_id:
        from mlflow.tracking import MlflowClient

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "reference_profile.bin"
            local.write_bytes(data)
            MlflowClient(settings.mlflow_url).log_artifact(run_id, str(local), "monitoring")
    return path


def load_reference(
    project: str, version: int | str, settings: Settings | None = None
) -> DatasetProfileView:
    from mlops_lib import profiles
    from mlops_lib import versioning as vc

    data = vc.read(project, MONITORING_BRANCH, reference_path(project, version), settings)
    return profiles.deserialize(data)


def profile_windows(
    project: str, *, now: datetime | None = None, settings: Settings | None = None
) -> list[dict[str, Any]]:
    """Profile every closed, not yet profiled hour window of the prediction log.

    Incremental: a window's profile is written once; later runs skip it. Commits the
    monitoring branch (the shipped prediction log with the new profiles).
    """

    from mlops_lib import profiles
    from mlops_lib import versioning as vc
    from mlops_lib.ingest import project_spec

    settings = settings or get_settings()
    spec = project_spec(project, settings)
    _monitoring_branch(project, settings)
    now = now or datetime.now(UTC)
    logs = vc.list_paths(project, MONITORING_BRANCH, predictions_prefix(project), settings)
    done = {
        w
        for p in vc.list_paths(project, MONITORING_BRANCH, profiles_prefix(project), settings)
        if (w := window_of(p)) is not None
    }
    made = []
    for hour, paths in windows_to_profile(logs, done, now).items():
        view, rows = _log_view(spec, paths, settings)
        path = window_profile_path(project, hour)
        vc.upload(
            project,
            MONITORING_BRANCH,
            path,
            profiles.serialize(view),
            "application/octet-stream",
            settings,
        )
        made.append({"window": hour.isoformat(), "rows": rows, "path": path})
    if made:
        vc.commit(
            project,
            MONITORING_BRANCH,
            f"profiles of {len(made)} prediction-log windows",
            {"windows": ",".join(m["window"] for m in made)},
            settings,
        )
    return made


def _monitoring_branch(project: str, settings: Settings) -> None:
    from mlops_lib import versioning as vc

    vc.ensure_branch(project, MONITORING_BRANCH, settings=settings)


def _log_view(
    spec: ProjectSpec, paths: list[str], settings: Settings
) -> tuple[DatasetProfileView, int]:
    """Profile of prediction-log files (the monitored columns) and their row count."""
    from mlops_lib import profiles
    from mlops_lib import versioning as vc

    frame = vc.read_parquet(spec.name, MONITORING_BRANCH, paths, settings)
    return profiles.profile(monitored_frame(spec, frame)), len(frame)


# Reports ---------------------------------------------------------------------------
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
) -> dict[str, Any]:
    """What the monitor saw: per-column drift, prediction drift, missing and new columns.

    A window with no traffic (``target`` None) gives a report that says so, not an error.
    """
    m = spec.monitoring
    expected = [*spec.features, *OUTPUTS]
    report: dict[str, Any] = {
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
        if column not in seen:
            continue
        ref_sum, tgt_sum = column_summary(reference, column), column_summary(target, column)
        entry: dict[str, Any] = {"reference": ref_sum, "target": tgt_sum}
        report["rows"] = max(report["rows"], tgt_sum["count"])
        if tgt_sum["count"] and tgt_sum["nulls"] == tgt_sum["count"]:
            report["notes"].append(f"{column}: every value is null")
        new = sorted(set(tgt_sum.get("top", {})) - set(ref_sum.get("top", {})))
        if new and column in categorical:
            entry["new_values"] = new
            report["notes"].append(f"{column}: values never seen in training: {new}")
        if column in scores:
            entry |= scores[column].as_dict()
        report["columns"][column] = entry
    report["drifted_features"] = [
        c for c in spec.features if report["columns"].get(c, {}).get("drift")
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


def render_html(report: dict[str, Any]) -> str:
    """A readable page of a drift report: a summary and one chart per column (inline SVG)."""
    from html import escape

    def bars(ref: dict[str, float], tgt: dict[str, float]) -> str:
        keys = list(dict.fromkeys([*ref, *tgt]))[:10]
        top = max([*ref.values(), *tgt.values(), 1e-12])
        w, h = 36, 90
        parts = []
        for i, k in enumerate(keys):
            for j, (series, color) in enumerate(((ref, "#8aa4c8"), (tgt, "#d9822b"))):
                v = float(series.get(k, 0.0))
                bh = h * v / top
                x = 10 + i * (w + 8) + j * (w // 2)
                parts.append(
                    f'<rect x="{x}" y="{10 + h - bh:.1f}" width="{w // 2 - 1}" '
                    f'height="{bh:.1f}" fill="{color}">'
                    f"<title>{escape(str(k))}: {v:g}</title></rect>"
                )
            parts.append(
                f'<text x="{10 + i * (w + 8)}" y="{h + 24}" font-size="9">'
                f"{escape(str(k))[:8]}</text>"
            )
        width = 20 + len(keys) * (w + 8)
        return f'<svg width="{width}" height="{h + 30}">{"".join(parts)}</svg>'

    rows = []
    for column, entry in report["columns"].items():
        ref, tgt = entry["reference"], entry["target"]
        if "quantiles" in ref and "quantiles" in tgt:
            chart = bars(ref["quantiles"], tgt["quantiles"])
        else:
            ref_n, tgt_n = max(ref["count"], 1), max(tgt["count"], 1)
            chart = bars(
                {k: v / ref_n for k, v in ref.get("top", {}).items()},
                {k: v / tgt_n for k, v in tgt.get("top", {}).items()},
            )
        flag = "DRIFT" if entry.get("drift") else "ok"
        p = entry.get("p_value")
        rows.append(
            f"<tr class='{flag.lower()}'><td>{escape(column)}</td><td>{flag}</td>"
            f"<td>{escape(str(entry.get('algorithm', '-')))}</td>"
            f"<td>{entry.get('statistic', float('nan')):.4f}</td>"
            f"<td>{'-' if p is None else f'{p:.4g}'}</td><td>{chart}</td></tr>"
        )
    notes = "".join(f"<li>{escape(n)}</li>" for n in report["notes"]) or "<li>none</li>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Drift report: {escape(report["project"])}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 10px;text-align:left}}
tr.drift td:nth-child(2){{color:#b00;font-weight:bold}}</style></head><body>
<h1>Drift report: {escape(report["project"])} v{escape(report["model_version"])}</h1>
<p>Windows: {escape(", ".join(report["windows"]) or "none")}; rows: {report["rows"]};
method {escape(report["method"])}, threshold {report["threshold"]}.
Drifted features: <b>{escape(", ".join(report["drifted_features"]) or "none")}</b>.
Bars: training reference (blue) and production (orange): quantiles for numbers,
value shares for categories.</p>
<p>Live metric: {escape(_live_line(report.get("live_metric")))}.</p>
<h2>Notes</h2><ul>{notes}</ul>
<table><tr><th>column</th><th>verdict</th><th>test</th><th>statistic</th><th>p-value</th>
<th>reference vs production</th></tr>{"".join(rows)}</table>
</body></html>
"""


def _live_line(live: dict[str, Any] | None) -> str:
    if not live or live.get("value") is None:
        return (live or {}).get("note") or "no labels yet"
    return f"{live['metric']} {live['value']:.4f} on {live['rows']} labelled predictions"


# The monitor run ---------------------------------------------------------------------
def policy(report: dict[str, Any], spec: ProjectSpec) -> tuple[bool, str]:
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
        from mlops_lib.automl import LOWER_IS_BETTER

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


def monitor(
    project: str,
    *,
    include_open_window: bool = False,
    dag_run_id: str = "",
    now: datetime | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Profile new windows, compare them with the champion's reference, store the report.

    The report (JSON and HTML) goes to lakeFS (``monitoring/<project>/reports/<id>/``) and
    to an MLflow run of the experiment ``<project>-monitoring``; the lineage store records
    it with the policy's verdict. ``include_open_window`` also reports the current hour
    (profiled on the fly, not stored), for runs that cannot wait for the window to close.
    """
    import json

    from mlops_lib import profiles
    from mlops_lib import versioning as vc
    from mlops_lib.ingest import project_spec
    from mlops_lib.lineage import lineage_store
    from mlops_lib.registry import champion_version

    settings = settings or get_settings()
    spec = project_spec(project, settings)
    now = now or datetime.now(UTC)
    store = lineage_store(settings)
    version = champion_version(project, settings)
    if version is None:
        raise NothingToMonitor(f"{project} has no champion to monitor yet")
    profile_windows(project, now=now, settings=settings)
    previous = store.drift_reports(project, limit=1)
    last = previous[0]["last_window"] if previous else ""
    views: list[Any] = []
    windows: list[str] = []
    for path in sorted(
        vc.list_paths(project, MONITORING_BRANCH, profiles_prefix(project), settings)
    ):
        hour = window_of(path)
        if hour is not None and hour.isoformat() > last:
            views.append(profiles.deserialize(vc.read(project, MONITORING_BRANCH, path, settings)))
            windows.append(hour.isoformat())
    if include_open_window:
        current = now.replace(minute=0, second=0, microsecond=0)
        logs = [
            p
            for p in vc.list_paths(
                project, MONITORING_BRANCH, predictions_prefix(project), settings
            )
            if window_of(p) == current
        ]
        if logs:
            views.append(_log_view(spec, logs, settings)[0])
            windows.append(current.isoformat())
    try:
        reference = load_reference(project, version, settings)
    except Exception as exc:
        raise NothingToMonitor(
            f"{project} v{version} has no reference profile (registered before monitoring "
            f"existed, or by hand): {type(exc).__name__}"
        ) from exc
    report = drift_report(spec, reference, merge(views), model_version=version, windows=windows)
    report["live_metric"] = _live_metric(spec, version, previous, settings)
    fired, reason = policy(report, spec)
    report |= {"fired": fired, "reason": reason, "created_at": now.isoformat()}

    stamp = now.strftime("%Y%m%dT%H%M%S")
    folder = f"monitoring/{project}/reports/{stamp}"
    vc.upload(
        project,
        MONITORING_BRANCH,
        f"{folder}/report.json",
        json.dumps(report, indent=2, default=str).encode(),
        "application/json",
        settings,
    )
    vc.upload(
        project,
        MONITORING_BRANCH,
        f"{folder}/report.html",
        render_html(report).encode(),
        "text/html",
        settings,
    )
    commit = vc.commit(
        project,
        MONITORING_BRANCH,
        f"drift report {stamp} of {project}",
        {"model_version": str(version), "fired": str(fired)},
        settings,
    )
    run_id = _log_to_mlflow(project, report, settings)
    pred = report.get("prediction_drift") or {}
    row = store.record_drift_report(
        project=project,
        model_version=int(version),
        windows=windows,
        last_window=windows[-1] if windows else last,
        rows=report["rows"],
        drifted_features=report["drifted_features"],
        scores={
            c: e.get("p_value", e.get("statistic"))
            for c, e in report["columns"].items()
            if "algorithm" in e
        },
        prediction_drift=pred.get("statistic"),
        live_metric=report["live_metric"]["value"],
        labelled_rows=report["live_metric"]["rows"],
        fired=fired,
        reason=reason,
        lakefs_uri=vc.lakefs_uri(project, commit, f"{folder}/report.html"),
        mlflow_run_id=run_id,
        dag_run_id=dag_run_id,
    )
    return {
        "report_id": row["id"],
        "fired": fired,
        "reason": reason,
        "drifted_features": report["drifted_features"],
        "rows": report["rows"],
        "windows": windows,
        "live_metric": report["live_metric"],
        "lakefs_uri": row["lakefs_uri"],
        "mlflow_run_id": run_id,
    }


def _live_metric(
    spec: ProjectSpec, version: int | str, previous: list[dict[str, Any]], settings: Settings
) -> dict[str, Any]:
    """The live metric on the champion's predictions labelled since the previous report."""
    from mlops_lib.labels import labelled_predictions, live_metric, stamp

    # The lineage store gives times as ISO strings (naive ones are UTC).
    after = stamp(_when(previous[0]["created_at"])) if previous else ""
    frame, files = labelled_predictions(spec.name, settings, after=after)
    if len(frame):
        frame = frame[frame["model_version"].astype(str) == str(version)]
    out = live_metric(spec, frame)
    out["labels_files"] = files
    if files and not len(frame):
        out["note"] = f"the new labels are for predictions of other versions than v{version}"
    return out


def _log_to_mlflow(project: str, report: dict[str, Any], settings: Settings) -> str:
    """The report as a run of ``<project>-monitoring``: metrics per column and the files."""
    import json
    import tempfile
    from pathlib import Path

    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_url)
    mlflow.set_experiment(f"{project}-monitoring")
    with mlflow.start_run(run_name=f"drift@{report['created_at'][:16]}") as run:
        mlflow.set_tags({"model_version": report["model_version"], "fired": str(report["fired"])})
        metrics = {"rows": report["rows"], "drifted_features": len(report["drifted_features"])}
        live = report.get("live_metric") or {}
        if live.get("value") is not None:
            metrics[f"live_{live['metric']}"] = live["value"]
            metrics["labelled_rows"] = live["rows"]
        for column, entry in report["columns"].items():
            if entry.get("p_value") is not None:
                metrics[f"p_value.{column}"] = entry["p_value"]
            if "statistic" in entry:
                metrics[f"statistic.{column}"] = entry["statistic"]
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "report.json").write_text(json.dumps(report, indent=2, default=str))
            (Path(tmp) / "report.html").write_text(render_html(report))
            mlflow.log_artifacts(tmp, "drift_report")
        return run.info.run_id


# Continuous training ---------------------------------------------------------------------
def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    when = datetime.fromisoformat(value)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


SAME_EPISODE = "same episode"


def pending_drift(
    reports: list[dict[str, Any]], cooldown: timedelta, now: datetime
) -> tuple[dict[str, Any] | None, str]:
    """The drift report a retraining should act on now, and why (or why nothing).

    ``reports`` newest first. A fired report is part of the episode of the last retraining
    when it was created within ``cooldown`` after that retraining claimed its report, so
    one drift episode causes one retraining, however many monitor runs it fires.
    """
    claims = [
        _when(r["handled_at"])
        for r in reports
        if r.get("handled_at") and not str(r.get("handled_by", "")).startswith("absorbed")
    ]
    last_claim = max((c for c in claims if c), default=None)
    fired = [r for r in reports if r["fired"] and not r.get("handled_by")]
    if not fired:
        return None, "no fired drift report awaits retraining"
    if last_claim is not None:
        quiet_until = last_claim + cooldown
        fresh = [r for r in fired if _when(r["created_at"]) >= quiet_until]
        if not fresh:
            return None, (
                f"drift report {fired[0]['id']} fired inside the cooldown of the retraining "
                f"started {last_claim.isoformat(timespec='seconds')} (until "
                f"{quiet_until.isoformat(timespec='seconds')}): {SAME_EPISODE}"
            )
        if now < quiet_until:
            return None, f"cooldown until {quiet_until.isoformat(timespec='seconds')}"
        fired = fresh
    report = fired[0]
    return report, f"drift report {report['id']}: {report['reason']}"


def drift_to_act_on(project: str, settings: Settings | None = None) -> tuple[dict | None, str]:
    """``pending_drift`` for a project, from the lineage store and its spec's cooldown."""
    from mlops_lib.ingest import project_spec
    from mlops_lib.lineage import lineage_store

    settings = settings or get_settings()
    spec = project_spec(project, settings)
    reports = lineage_store(settings).drift_reports(project, limit=200)
    cooldown = timedelta(minutes=spec.monitoring.cooldown_minutes)
    return pending_drift(reports, cooldown, datetime.now(UTC))


def claim_drift(
    project: str, report_id: int, dag_run_id: str, settings: Settings | None = None
) -> dict[str, Any]:
    """Mark a report as acted on by a retraining run (earlier unhandled ones join its episode)."""
    from mlops_lib.lineage import lineage_store

    settings = settings or get_settings()
    store = lineage_store(settings)
    now = datetime.now(UTC)
    for r in store.drift_reports(project, limit=200):
        if r["id"] < report_id and r["fired"] and not r["handled_by"]:
            store.update_drift_report(
                r["id"], handled_by=f"absorbed by report {report_id}", handled_at=now
            )
    return store.update_drift_report(report_id, handled_by=dag_run_id, handled_at=now)
