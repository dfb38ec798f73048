"""Continuous training: which drift report a retraining acts on, and the data it learns from.

* **Episodes**: one drift episode causes one retraining, however many monitor runs fire
  (:func:`pending_drift`, :func:`claim_drift`); the ``DriftPolicySensor`` and the
  ``<project>__continuous_training`` DAG call these.
* **Production data**: labelled served rows not used yet become a batch with the spec's
  schema that goes through the same quality gate onto ``main``, under
  ``datasets/<project>/production/labels-through=<stamp>/`` (:func:`fold_in`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NotRequired, TypedDict

from mlops_lib import layout
from mlops_lib import versioning as vc
from mlops_lib.ingest import land_batch, open_branch, publish
from mlops_lib.labels import REQUEST_ID, ROW, labelled_predictions
from mlops_lib.lineage import DriftReportRow, lineage_store, stored_time
from mlops_lib.quality import DataQualityError
from mlops_lib.settings import Settings, get_settings
from mlops_lib.spec import ProjectSpec, project_spec

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SAME_EPISODE = "same episode"


class DriftToActOn(TypedDict):
    """The drift report a retraining acts on (the sensor's XCom value)."""

    report_id: int
    drifted_features: list[str]
    reason: str
    model_version: int


class FoldIn(TypedDict):
    """The ``main`` commit continuous training trains on, and what was folded in."""

    commit_id: str
    production_rows: int
    note: NotRequired[str]
    labels_files: NotRequired[list[str]]


# Drift episodes --------------------------------------------------------------------
def pending_drift(
    reports: list[DriftReportRow], cooldown: timedelta, now: datetime
) -> tuple[DriftReportRow | None, str]:
    """The drift report a retraining should act on now, and why (or why nothing).

    ``reports`` newest first. A fired report is part of the episode of the last retraining
    when it was created within ``cooldown`` after that retraining claimed its report, so
    one drift episode causes one retraining, however many monitor runs it fires.
    """
    claims = [
        stored_time(r["handled_at"])
        for r in reports
        if r.get("handled_at") and not str(r.get("handled_by", "")).startswith("absorbed")
    ]
    last_claim = max((c for c in claims if c), default=None)
    fired = [r for r in reports if r["fired"] and not r.get("handled_by")]
    if not fired:
        return None, "no fired drift report awaits retraining"
    if last_claim is not None:
        quiet_until = last_claim + cooldown
        fresh = [r for r in fired if stored_time(r["created_at"]) >= quiet_until]
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


def drift_to_act_on(
    project: str, settings: Settings | None = None
) -> tuple[DriftReportRow | None, str]:
    """``pending_drift`` for a project, from the lineage store and its spec's cooldown."""
    settings = settings or get_settings()
    spec = project_spec(project, settings)
    reports = lineage_store(settings).drift_reports(project, limit=200)
    cooldown = timedelta(minutes=spec.monitoring.cooldown_minutes)
    return pending_drift(reports, cooldown, datetime.now(UTC))


def claim_drift(
    project: str, report_id: int, dag_run_id: str, settings: Settings | None = None
) -> DriftReportRow:
    """Mark a report as acted on by a retraining run (earlier unhandled ones join its episode)."""
    settings = settings or get_settings()
    store = lineage_store(settings)
    now = datetime.now(UTC)
    for r in store.drift_reports(project, limit=200):
        if r["id"] < report_id and r["fired"] and not r["handled_by"]:
            store.update_drift_report(
                r["id"], handled_by=f"absorbed by report {report_id}", handled_at=now
            )
    return store.update_drift_report(report_id, handled_by=dag_run_id, handled_at=now)


# Production data -------------------------------------------------------------------
def production_batch(spec: ProjectSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """Labelled served rows in the spec's schema, ready for the quality gate."""
    schema = spec.schema_
    out = frame[[c for c in spec.features if c in frame.columns]].copy()
    out[schema.key] = frame[REQUEST_ID].astype(str) + ":" + frame[ROW].astype(str)
    if schema.event_time:
        out[schema.event_time] = frame["ts"]
    out[spec.target.column] = frame[spec.target.column]
    return out[[c for c in schema.columns if c in out.columns]]


def folded_through(spec: ProjectSpec, settings: Settings) -> str:
    """The stamp of the newest labels batch already folded into ``main`` ("" if none)."""
    project = spec.name
    prefix = layout.production_prefix(project)
    folded = [
        layout.stamp_of(p)
        for p in vc.list_paths(project, layout.MAIN, prefix, settings)
        if layout.LABELS_THROUGH in p
    ]
    return max(folded, default="")


def fold_in(project: str, run_id: str, settings: Settings | None = None) -> FoldIn:
    """Bring labelled production rows not used yet onto ``main``, through the quality gate.

    Returns the ``main`` commit to train on: the merge of the production batch, or main's
    head when there is nothing new or the batch is rejected (the reason is logged and
    returned; those labels are tried again next time).
    """
    settings = settings or get_settings()
    spec = project_spec(project, settings)
    frame, files = labelled_predictions(spec, settings, after=folded_through(spec, settings))
    head = vc.head(project, layout.MAIN, settings)
    if not files:
        log.info("no new labelled production data; training on main %s", head)
        return {"commit_id": head, "production_rows": 0, "note": "no new labels"}
    newest = layout.stamp_of(files[-1])
    batch = production_batch(spec, frame)
    opened = open_branch(project, run_id, settings)
    result = land_batch(
        spec,
        opened["branch"],
        day=datetime.now(UTC).strftime("%Y-%m-%d"),
        run_id=run_id,
        dag_id="continuous_training",
        source=f"prediction log labelled by {', '.join(files)}",
        partition=layout.production_partition(project, newest),
        frame=batch,
        settings=settings,
    )
    try:
        published = publish(project, result, settings)
    except DataQualityError as exc:
        log.warning("labelled production batch rejected; training on main %s:\n%s", head, exc)
        return {"commit_id": head, "production_rows": 0, "note": str(exc).splitlines()[0]}
    log.info(
        "lakeFS %s: %d labelled production rows (labels through %s) merged into main -> %s",
        layout.repo_name(project),
        len(batch),
        newest,
        published["commit_id"],
    )
    return {
        "commit_id": published["commit_id"],
        "production_rows": len(batch),
        "labels_files": files,
    }
