"""Continuous training: which drift report a retraining acts on, and the data it learns from.

* **Episodes**: one drift episode causes one retraining, however many monitor runs fire
  (:func:`pending_drift`, :func:`claim_drift`); the ``DriftPolicySensor`` and the
  ``<project>__continuous_training`` DAG call these.
* **Production data**: labelled served rows not used yet become a batch with the spec's
  schema that goes through the same quality gate onto ``main``, under
  ``datasets/<project>/production/labels-through=<stamp>/`` (:func:`fold_in`). Each row keeps
  its identity: the key and event time the request sent with the instance (the served time
  when it sent none), and its provenance (request id, row) in columns of its own.
* **Nothing new, no retraining**: when no production rows could be added and training on
  ``main`` would repeat the champion (same commit, spec and code), the run ends skipped
  (:func:`nothing_new`) and gives its claim on the drift report back; the drift report
  records the outcome either way.
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
from mlops_lib.quality import DataQualityError, parse_datetimes
from mlops_lib.settings import Settings, get_settings
from mlops_lib.spec import Column, ProjectSpec, project_spec

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
    """The ``main`` commit continuous training trains on, and what was folded in.

    ``rejected``: the ``lakefs://`` URI of the rejection report when the production batch
    failed the quality gate; ``skipped``: why there is nothing to retrain on.
    """

    commit_id: str
    production_rows: int
    note: NotRequired[str]
    labels_files: NotRequired[list[str]]
    rejected: NotRequired[str]
    skipped: NotRequired[str]


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
def _typed(values: pd.Series, col: Column) -> pd.Series:
    """Identity values as the spec's column type (the prediction log may hold them as
    objects when some requests sent none)."""
    import pandas as pd

    if col.type == "datetime":
        return parse_datetimes(values, col)
    if col.type == "int":
        return pd.to_numeric(values).astype("int64")
    if col.type == "float":
        return pd.to_numeric(values).astype("float64")
    if col.type == "bool":  # kept as text when a flush mixed types: "False" is False
        return values.map(lambda v: v if isinstance(v, bool) else str(v).lower() == "true")
    return values.astype(str)


def production_batch(spec: ProjectSpec, frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Labelled served rows in the spec's schema, ready for the quality gate, and a note
    on the rows left out.

    Rows keep the key and event time their request sent (the served time stands in for an
    event time not sent); a row served without its key has no identity and is left out; an
    instance served more than once keeps its latest labelled row. Provenance (request id,
    row) stays in columns of its own.
    """
    import pandas as pd

    schema = spec.schema_
    frame = frame.sort_values("ts", kind="mergesort")
    notes = []
    if schema.key:
        keys = frame.get(schema.key, pd.Series(None, index=frame.index, dtype=object))
        unknown = int(keys.isna().sum())
        if unknown:
            notes.append(f"{unknown} rows served without their {schema.key!r} left out")
        frame = frame[keys.notna()]
    out = frame[[c for c in spec.features if c in frame.columns]].copy()
    if schema.key:
        out[schema.key] = _typed(frame[schema.key], schema.columns[schema.key])
    if schema.event_time:
        served = pd.to_datetime(frame["ts"], utc=True)
        sent = frame.get(schema.event_time)
        out[schema.event_time] = (
            served
            if sent is None
            else _typed(sent, schema.columns[schema.event_time]).fillna(served)
        )
    out[spec.target.column] = frame[spec.target.column]
    out[REQUEST_ID] = frame[REQUEST_ID].astype(str)
    out[ROW] = frame[ROW].astype("int64")
    if schema.key:
        repeated = out.duplicated(schema.key, keep="last")
        if repeated.any():
            notes.append(f"{int(repeated.sum())} earlier rows of instances served again left out")
        out = out[~repeated]
    columns = [c for c in schema.columns if c in out.columns] + [REQUEST_ID, ROW]
    return out[columns].reset_index(drop=True), "; ".join(notes)


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


def nothing_new(fold: FoldIn, unchanged: str | None) -> str | None:
    """Why a retraining has nothing to learn from, or None: no production rows were added
    and training on ``main`` would repeat the champion (``unchanged``: why, as
    ``training.unchanged_since_champion`` says; None when main, the spec or the code moved)."""
    if fold["production_rows"] or not unchanged:
        return None
    why = fold.get("note") or "no new labelled production rows"
    return f"nothing new to learn from: {why}; {unchanged}"


def fold_in(
    project: str, run_id: str, report_id: int | None = None, settings: Settings | None = None
) -> FoldIn:
    """Bring labelled production rows not used yet onto ``main``, through the quality gate.

    Returns the ``main`` commit to train on: the merge of the production batch, or main's
    head when there is nothing new or the batch is rejected (those labels are tried again
    next time). ``skipped`` says why there is nothing to retrain on; the outcome is recorded
    on the drift report ``report_id``.
    """
    from mlops_lib.training import unchanged_since_champion  # heavy: not for the sensor

    settings = settings or get_settings()
    spec = project_spec(project, settings)
    fold = _fold_production_rows(spec, run_id, settings)
    skipped = nothing_new(fold, unchanged_since_champion(spec, fold["commit_id"], settings))
    if skipped:
        fold["skipped"] = skipped
    outcome = f"skipped: {skipped}" if skipped else _retraining_outcome(fold)
    if fold.get("rejected"):
        outcome += f"; production batch rejected: {fold['rejected']}"
    log.info("%s", outcome)
    if report_id is not None:
        _record_outcome(report_id, outcome, release=bool(skipped), settings=settings)
    return fold


def _record_outcome(report_id: int, outcome: str, *, release: bool, settings: Settings) -> None:
    """The outcome on the drift report; a skipped run also gives its claim back, so the
    drift stays pending (and no cooldown starts) until there is something to learn from."""
    store = lineage_store(settings)
    if release:
        store.update_drift_report(report_id, outcome=outcome, handled_by="", handled_at=None)
    else:
        store.update_drift_report(report_id, outcome=outcome)


def _retraining_outcome(fold: FoldIn) -> str:
    note = f" ({fold['note']})" if fold.get("note") else ""
    return (
        f"retraining on main {fold['commit_id'][:12]} with {fold['production_rows']} "
        f"labelled production rows folded in{note}"
    )


def _fold_production_rows(spec: ProjectSpec, run_id: str, settings: Settings) -> FoldIn:
    """The fold-in itself: land the production batch on a branch, publish it if it passes."""
    project = spec.name
    frame, files = labelled_predictions(spec, settings, after=folded_through(spec, settings))
    head = vc.head(project, layout.MAIN, settings)
    if not files:
        return {"commit_id": head, "production_rows": 0, "note": "no new labels"}
    newest = layout.stamp_of(files[-1])
    batch, left_out = production_batch(spec, frame)
    if batch.empty:
        note = f"no labelled row could be folded in ({left_out})"
        return {"commit_id": head, "production_rows": 0, "note": note}
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
        provenance=True,
        settings=settings,
    )
    try:
        published = publish(project, result, settings)
    except DataQualityError as exc:
        log.warning("labelled production batch rejected; training on main %s:\n%s", head, exc)
        return {
            "commit_id": head,
            "production_rows": 0,
            "note": "the labelled production batch was rejected",
            "rejected": layout.lakefs_uri(project, result["branch"], result["report"]),
        }
    log.info(
        "lakeFS %s: %d labelled production rows (labels through %s) merged into main -> %s",
        layout.repo_name(project),
        len(batch),
        newest,
        published["commit_id"],
    )
    fold: FoldIn = {
        "commit_id": published["commit_id"],
        "production_rows": len(batch),
        "labels_files": files,
    }
    if left_out:
        fold["note"] = left_out
    return fold
