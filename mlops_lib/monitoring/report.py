"""The monitor run: profile new windows, compare with the champion's reference, report.

The report (JSON and HTML) goes to lakeFS (``monitoring/<project>/reports/<stamp>/``) and
to an MLflow run of the experiment ``<project>-monitoring``; the lineage store records it
with the drift policy's verdict.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any, TypedDict

from mlops_lib import layout
from mlops_lib import versioning as vc
from mlops_lib.labels import labelled_predictions
from mlops_lib.layout import MONITORING_BRANCH
from mlops_lib.lineage import DriftReportRow, lineage_store, stored_time
from mlops_lib.metrics import LiveMetric, live_metric
from mlops_lib.monitoring.drift import DriftReport, drift_report, policy
from mlops_lib.monitoring.reference import load_reference
from mlops_lib.monitoring.windows import merge, open_window, profile_windows, windows_after
from mlops_lib.registry import champion_version
from mlops_lib.settings import Settings, get_settings
from mlops_lib.spec import ProjectSpec, project_spec
from mlops_lib.tracking import connect as connect_mlflow
from mlops_lib.tracking import metric_name


class NothingToMonitor(RuntimeError):
    """No champion, or a champion without a reference profile: nothing to compare with."""


class MonitorResult(TypedDict):
    """What the monitor task hands on (the drift asset's extra)."""

    report_id: int
    fired: bool
    reason: str
    drifted_features: list[str]
    rows: int
    windows: list[str]
    live_metric: LiveMetric
    lakefs_uri: str
    mlflow_run_id: str


# The report page ---------------------------------------------------------------------
def _bars(ref: dict[str, float], tgt: dict[str, float]) -> str:
    """Inline SVG bars: reference (blue) beside production (orange) for each key."""
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
            f'<text x="{10 + i * (w + 8)}" y="{h + 24}" font-size="9">{escape(str(k))[:8]}</text>'
        )
    width = 20 + len(keys) * (w + 8)
    return f'<svg width="{width}" height="{h + 30}">{"".join(parts)}</svg>'


def _column_row(column: str, entry: dict[str, Any]) -> str:
    """One table row of the report page: verdict, test, statistic, p-value and chart."""
    ref, tgt = entry["reference"], entry["target"]
    if "quantiles" in ref and "quantiles" in tgt:
        chart = _bars(ref["quantiles"], tgt["quantiles"])
    else:
        ref_n, tgt_n = max(ref["count"], 1), max(tgt["count"], 1)
        chart = _bars(
            {k: v / ref_n for k, v in ref.get("top", {}).items()},
            {k: v / tgt_n for k, v in tgt.get("top", {}).items()},
        )
    flag = "DRIFT" if entry.get("drift") else "ok"
    p = entry.get("p_value")
    return (
        f"<tr class='{flag.lower()}'><td>{escape(column)}</td><td>{flag}</td>"
        f"<td>{escape(str(entry.get('algorithm', '-')))}</td>"
        f"<td>{entry.get('statistic', float('nan')):.4f}</td>"
        f"<td>{'-' if p is None else f'{p:.4g}'}</td><td>{chart}</td></tr>"
    )


def _skew_line(report: DriftReport) -> str:
    """Training/serving skew of the store features, for a project that has them."""
    if "skewed_features" not in report:
        return ""
    skewed = escape(", ".join(report["skewed_features"]) or "none")
    return f"\nStore features skewed (served vs training set): <b>{skewed}</b>."


def render_html(report: DriftReport) -> str:
    """A readable page of a drift report: a summary and one chart per column (inline SVG)."""
    rows = [_column_row(column, entry) for column, entry in report["columns"].items()]
    notes = "".join(f"<li>{escape(n)}</li>" for n in report["notes"]) or "<li>none</li>"
    skew = _skew_line(report)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Drift report: {escape(report["project"])}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 10px;text-align:left}}
tr.drift td:nth-child(2){{color:#b00;font-weight:bold}}</style></head><body>
<h1>Drift report: {escape(report["project"])} v{escape(report["model_version"])}</h1>
<p>Windows: {escape(", ".join(report["windows"]) or "none")}; rows: {report["rows"]};
method {escape(report["method"])}, threshold {report["threshold"]}.
Drifted features: <b>{escape(", ".join(report["drifted_features"]) or "none")}</b>.{skew}
Bars: training reference (blue) and production (orange): quantiles for numbers,
value shares for categories.</p>
<p>Live metric: {escape(_live_line(report.get("live_metric")))}.</p>
<h2>Notes</h2><ul>{notes}</ul>
<table><tr><th>column</th><th>verdict</th><th>test</th><th>statistic</th><th>p-value</th>
<th>reference vs production</th></tr>{"".join(rows)}</table>
</body></html>
"""


def _live_line(live: LiveMetric | None) -> str:
    if not live or live.get("value") is None:
        return (live or {}).get("note") or "no labels yet"
    return f"{live['metric']} {live['value']:.4f} on {live['rows']} labelled predictions"


# The monitor run ---------------------------------------------------------------------
def monitor(
    project: str,
    *,
    include_open_window: bool = False,
    dag_run_id: str = "",
    now: datetime | None = None,
    settings: Settings | None = None,
) -> MonitorResult:
    """Profile new windows, compare them with the champion's reference, store the report.

    ``include_open_window`` also reports the current hour (profiled on the fly, not
    stored), for runs that cannot wait for the window to close.
    """
    settings = settings or get_settings()
    spec = project_spec(project, settings)
    now = now or datetime.now(UTC)
    store = lineage_store(settings)
    version = champion_version(project, settings)
    if version is None:
        raise NothingToMonitor(f"{project} has no champion to monitor yet")
    profile_windows(spec, now=now, settings=settings)
    previous = store.drift_reports(project, limit=1)
    last = previous[0]["last_window"] if previous else ""
    report = _assemble(spec, version, previous, last, now, include_open_window, settings)
    uri = _store_in_lakefs(spec, report, version, now, settings)
    run_id = _log_to_mlflow(project, report, settings)
    row = _record(spec, report, last, uri, run_id, dag_run_id, settings)
    return {
        "report_id": row["id"],
        "fired": report["fired"],
        "reason": report["reason"],
        "drifted_features": report["drifted_features"],
        "rows": report["rows"],
        "windows": report["windows"],
        "live_metric": report["live_metric"],
        "lakefs_uri": row["lakefs_uri"],
        "mlflow_run_id": run_id,
    }


def _assemble(
    spec: ProjectSpec,
    version: int,
    previous: list[DriftReportRow],
    last: str,
    now: datetime,
    include_open_window: bool,
    settings: Settings,
) -> DriftReport:
    """The windows after ``last`` (the previous report's) against the reference, the live
    metric and the policy's verdict."""
    views, windows = windows_after(spec, last, settings)
    if include_open_window and (current := open_window(spec, now, settings)) is not None:
        views.append(current[0])
        windows.append(current[1])
    try:
        reference = load_reference(spec.name, version, settings)
    except Exception as exc:
        raise NothingToMonitor(
            f"{spec.name} v{version} has no reference profile (registered before monitoring "
            f"existed, or by hand): {type(exc).__name__}"
        ) from exc
    report = drift_report(spec, reference, merge(views), model_version=version, windows=windows)
    report["live_metric"] = _live_metric(spec, version, previous, settings)
    fired, reason = policy(report, spec)
    report |= {"fired": fired, "reason": reason, "created_at": now.isoformat()}
    return report


def _store_in_lakefs(
    spec: ProjectSpec, report: DriftReport, version: int, now: datetime, settings: Settings
) -> str:
    """Commit the report (JSON and HTML) on the monitoring branch; returns the page's URI."""
    project = spec.name
    stamp = now.strftime("%Y%m%dT%H%M%S")
    folder = layout.report_folder(project, stamp)
    body = json.dumps(report, indent=2, default=str).encode()
    vc.upload(
        project, MONITORING_BRANCH, f"{folder}/report.json", body, "application/json", settings
    )
    page = render_html(report).encode()
    vc.upload(project, MONITORING_BRANCH, f"{folder}/report.html", page, "text/html", settings)
    commit = vc.commit(
        project,
        MONITORING_BRANCH,
        f"drift report {stamp} of {project}",
        {"model_version": str(version), "fired": str(report["fired"])},
        settings,
    )
    return layout.lakefs_uri(project, commit, f"{folder}/report.html")


def _record(
    spec: ProjectSpec,
    report: DriftReport,
    last: str,
    uri: str,
    run_id: str,
    dag_run_id: str,
    settings: Settings,
) -> DriftReportRow:
    """The report's row in the lineage store."""
    windows = report["windows"]
    pred = report.get("prediction_drift") or {}
    return lineage_store(settings).record_drift_report(
        project=spec.name,
        model_version=int(report["model_version"]),
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
        fired=report["fired"],
        reason=report["reason"],
        lakefs_uri=uri,
        mlflow_run_id=run_id,
        dag_run_id=dag_run_id,
    )


def _live_metric(
    spec: ProjectSpec, version: int | str, previous: list[DriftReportRow], settings: Settings
) -> LiveMetric:
    """The live metric on the champion's predictions labelled since the previous report."""
    after = layout.stamp(stored_time(previous[0]["created_at"])) if previous else ""
    frame, files = labelled_predictions(spec, settings, after=after)
    if len(frame):
        frame = frame[frame["model_version"].astype(str) == str(version)]
    out = live_metric(spec, frame)
    out["labels_files"] = files
    if files and not len(frame):
        out["note"] = f"the new labels are for predictions of other versions than v{version}"
    return out


def _log_to_mlflow(project: str, report: DriftReport, settings: Settings) -> str:
    """The report as a run of ``<project>-monitoring``: metrics per column and the files."""
    import mlflow  # heavy: kept out of DAG parsing

    connect_mlflow(settings)
    mlflow.set_experiment(f"{project}-monitoring")
    with mlflow.start_run(run_name=f"drift@{report['created_at'][:16]}") as run:
        mlflow.set_tags({"model_version": report["model_version"], "fired": str(report["fired"])})
        mlflow.log_metrics(_mlflow_metrics(report))
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "report.json").write_text(json.dumps(report, indent=2, default=str))
            (Path(tmp) / "report.html").write_text(render_html(report))
            mlflow.log_artifacts(tmp, "drift_report")
        return run.info.run_id


def _mlflow_metrics(report: DriftReport) -> dict[str, float]:
    metrics: dict[str, float] = {
        "rows": report["rows"],
        "drifted_features": len(report["drifted_features"]),
    }
    live = report.get("live_metric") or {}
    if live.get("value") is not None:
        metrics[f"live_{live['metric']}"] = live["value"]
        metrics["labelled_rows"] = live["rows"]
    for column, entry in report["columns"].items():
        if entry.get("p_value") is not None:
            metrics[metric_name(f"p_value.{column}")] = entry["p_value"]
        if "statistic" in entry:
            metrics[metric_name(f"statistic.{column}")] = entry["statistic"]
    return metrics
