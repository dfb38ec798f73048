"""Versioned ingestion: a batch lands on its own lakeFS branch, passes the gate, then main.

The ``<project>__ingest`` DAG calls, in order, :func:`open_branch`, :func:`ingest_batch`
and :func:`publish`. They pass references (branch names, commit ids, lakeFS paths) only.
"""

from __future__ import annotations

import io
import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict

from mlops_lib import layout
from mlops_lib import versioning as vc
from mlops_lib.layout import MAIN
from mlops_lib.lineage import lineage_store
from mlops_lib.profiles import deserialize, profile, sample, serialize
from mlops_lib.quality import DataQualityError, QualityReport, Violation, check_batch, coerce
from mlops_lib.settings import Settings, get_settings
from mlops_lib.sources import SourceError, read_source
from mlops_lib.spec import ProjectSpec, project_spec

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


class _Timer:
    """Wall time of consecutive stages."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 3)
        self._last = now


class OpenedBranch(TypedDict):
    """The run's ingest branch and the main commit it starts from."""

    branch: str
    base_commit: str


def open_branch(project: str, run_id: str, settings: Settings | None = None) -> OpenedBranch:
    """Create the run's ingest branch from main (recreated on a retry)."""
    settings = settings or get_settings()
    branch = layout.ingest_branch_name(run_id)
    base = vc.head(project, MAIN, settings)
    vc.fresh_branch(project, branch, MAIN, settings)
    log.info("lakeFS %s: branch %s created from main@%s", layout.repo_name(project), branch, base)
    return {"branch": branch, "base_commit": base}


def _previous_profile(project: str, settings: Settings) -> Any | None:
    """Profile of the last accepted batch on main, if any."""
    latest = layout.latest_pointer(project)
    if not vc.exists(project, MAIN, latest, settings):
        return None
    pointer = json.loads(vc.read(project, MAIN, latest, settings))
    return deserialize(vc.read(project, MAIN, pointer["profile"], settings))


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    try:
        df.to_parquet(buf, index=False)
    except Exception:
        # A rejected batch with mixed-type columns is kept as text for inspection.
        buf = io.BytesIO()
        df.astype("string").to_parquet(buf, index=False)
    return buf.getvalue()


class LandedBatch(TypedDict):
    """A batch committed on its ingest branch, with the gate's verdict (not yet on main)."""

    branch: str
    commit_id: str
    passed: bool
    rows: int
    partition: str
    report: str
    summary: str
    seconds: dict[str, float]


class Published(TypedDict):
    """An accepted batch merged into main (the dataset asset's extra)."""

    commit_id: str
    rows: int
    partition: str
    uri: str


def ingest_batch(
    project: str,
    branch: str,
    *,
    day: str,
    run_id: str,
    dag_id: str,
    source: str | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> LandedBatch:
    """Read, check, write and commit one batch of the project's source on its branch."""
    settings = settings or get_settings()
    spec = project_spec(project, settings)
    return land_batch(
        spec,
        branch,
        day=day,
        run_id=run_id,
        dag_id=dag_id,
        source=source,
        settings=settings,
        now=now,
    )


def land_batch(
    spec: ProjectSpec,
    branch: str,
    *,
    day: str,
    run_id: str,
    dag_id: str,
    source: str | None = None,
    partition: str | None = None,
    frame: pd.DataFrame | None = None,
    provenance: bool = False,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> LandedBatch:
    """Read, check, write and commit one batch on its branch.

    Writes the data as Parquet under ``datasets/<project>/date=<day>/`` (or ``partition``),
    replacing that partition, the validation report and the whylogs profile beside it, and
    commits with metadata. Returns the commit id and the verdict; never touches main.
    ``frame``: a batch already in memory (``source`` then only says where it came from);
    ``provenance``: production rows with their request id and row columns.
    """
    settings = settings or get_settings()
    project = spec.name
    timer = _Timer()
    vc.reset_uncommitted(project, branch, settings)
    part = partition or layout.partition_prefix(project, day)
    df, origin, read_error = _read_batch(spec, source, frame, settings)
    timer.lap("read")
    report = _check(spec, df, read_error, now, settings, provenance)
    timer.lap("validate")
    df = _write_partition(spec, branch, part, df, report, run_id, settings, timer)
    metadata = {
        "source": origin[:1000],
        "rows": report.rows,
        "schema_hash": spec.schema_hash(),
        "spec_hash": spec.spec_hash(),
        "dag_id": dag_id,
        "run_id": run_id,
        "partition": part,
        "rules": report.summary(),
        "passed": report.passed,
    }
    verdict = "accepted" if report.passed else "rejected"
    message = f"ingest {project} {day}: {verdict} ({report.rows} rows)"
    commit_id = vc.commit(project, branch, message, metadata, settings)
    timer.lap("commit")
    log.info("lakeFS %s: committed %s on %s", layout.repo_name(project), commit_id, branch)
    log.info("stage seconds: %s", timer.laps)
    return {
        "branch": branch,
        "commit_id": commit_id,
        "passed": report.passed,
        "rows": report.rows,
        "partition": part,
        "report": f"{part}/{layout.REPORT_FILE}",
        "summary": report.summary(),
        "seconds": timer.laps,
    }


def _read_batch(
    spec: ProjectSpec, source: str | None, frame: pd.DataFrame | None, settings: Settings
) -> tuple[pd.DataFrame, str, str | None]:
    """The batch, where it came from, and why it could not be read (None when it could)."""
    import pandas as pd  # heavy: kept out of DAG parsing

    if frame is not None:
        return frame, source or "(in memory)", None
    try:
        df, origin = read_source(
            spec,
            override=source,
            base_dir=settings.repo_root,
            roots=settings.allowed_data_roots,
            settings=settings,
        )
    except SourceError as exc:
        return pd.DataFrame(), source or spec.source.path or "sql", str(exc)
    return df, origin, None


def _check(
    spec: ProjectSpec,
    df: pd.DataFrame,
    read_error: str | None,
    now: datetime | None,
    settings: Settings,
    provenance: bool = False,
) -> QualityReport:
    """The quality gate's report on a batch (every violation logged)."""
    if read_error:
        report = QualityReport(
            project=spec.name,
            rows=0,
            columns=[],
            violations=[Violation("source", read_error)],
            checked_rules=["source"],
        )
    else:
        previous = _previous_profile(spec.name, settings)
        report = check_batch(df, spec, previous_profile=previous, now=now, provenance=provenance)
    for v in report.violations:
        (log.error if v.severity == "blocking" else log.warning)("%s", v.line())
    log.info("%s", report.summary())
    return report


def _write_partition(
    spec: ProjectSpec,
    branch: str,
    part: str,
    df: pd.DataFrame,
    report: QualityReport,
    run_id: str,
    settings: Settings,
    timer: _Timer,
) -> pd.DataFrame:
    """Replace the partition on the branch: data, report and (accepted) profile and pointer."""
    project = spec.name
    removed = vc.delete_prefix(project, branch, part + "/", settings)
    if removed:
        log.info("replacing partition %s (%d objects)", part, removed)
    if report.passed:
        df = coerce(df, spec)
    if len(df.columns):
        data = _parquet_bytes(df)
        vc.upload(project, branch, f"{part}/{layout.DATA_FILE}", data, settings=settings)
    timer.lap("write")
    body = json.dumps(report.to_dict(), indent=2, default=str).encode()
    vc.upload(project, branch, f"{part}/{layout.REPORT_FILE}", body, "application/json", settings)
    if report.passed and report.rows:
        _write_profile(spec, branch, part, df, report, run_id, settings, timer)
    return df


def _write_profile(
    spec: ProjectSpec,
    branch: str,
    part: str,
    df: pd.DataFrame,
    report: QualityReport,
    run_id: str,
    settings: Settings,
    timer: _Timer,
) -> None:
    """The accepted batch's profile beside it, and the pointer to the last accepted batch."""
    project = spec.name
    view = report.profile
    if view is None:
        view = profile(sample(df[[c for c in df.columns if c != spec.schema.key]]))
    profile_path = f"{part}/{layout.PROFILE_FILE}"
    vc.upload(project, branch, profile_path, serialize(view), settings=settings)
    timer.lap("profile")
    pointer = {
        "partition": part,
        "data": f"{part}/{layout.DATA_FILE}",
        "profile": profile_path,
        "rows": report.rows,
        "run_id": run_id,
    }
    body = json.dumps(pointer).encode()
    vc.upload(project, branch, layout.latest_pointer(project), body, "application/json", settings)


def publish(project: str, result: LandedBatch, settings: Settings | None = None) -> Published:
    """Merge an accepted batch into main and delete its branch; reject otherwise.

    Idempotent: retried after its merge, it records and returns that merge.

    Raises DataQualityError listing every blocking violation (read from the report on
    the branch); the branch and its report are kept for inspection and main is unchanged.
    """
    settings = settings or get_settings()
    branch = result["branch"]
    report = json.loads(vc.read(project, result["commit_id"], result["report"], settings))
    if not report["passed"]:
        violations = [Violation(**v) for v in report["violations"] if v["severity"] == "blocking"]
        raise DataQualityError(
            project, violations, where=layout.lakefs_uri(project, branch, result["report"])
        )
    # A retry after the merge (the branch may be gone already) finishes the work instead.
    main_commit = vc.merged_into(project, result["commit_id"], MAIN, settings)
    if main_commit is None:
        main_commit = vc.merge(project, branch, MAIN, settings)
    if vc.branch_exists(project, branch, settings):
        vc.delete_branch(project, branch, settings)
    meta = vc.commit_metadata(project, result["commit_id"], settings)
    lineage_store(settings).record_dataset(
        project=project,
        commit_id=main_commit,
        rows=int(result["rows"]),
        schema_hash=meta.get("schema_hash", ""),
        rule_summary=meta.get("rules", ""),
        source=meta.get("source", ""),
        partition=result["partition"],
        dag_run_id=meta.get("run_id", ""),
    )
    log.info(
        "lakeFS %s: merged %s into main -> %s; branch deleted",
        layout.repo_name(project),
        branch,
        main_commit,
    )
    return {
        "commit_id": main_commit,
        "rows": result["rows"],
        "partition": result["partition"],
        "uri": layout.lakefs_uri(project, main_commit, result["partition"]),
    }


def ingest_now(
    project: str,
    *,
    run_id: str | None = None,
    day: str | None = None,
    source: str | None = None,
    settings: Settings | None = None,
) -> Published:
    """The three steps in one call (for scripts and benchmarks; the DAG runs them as tasks)."""
    now = datetime.now(UTC)
    run_id = run_id or f"manual__{now.strftime('%Y%m%dT%H%M%S%f')}"
    day = day or now.strftime("%Y-%m-%d")
    opened = open_branch(project, run_id, settings)
    result = ingest_batch(
        project,
        opened["branch"],
        day=day,
        run_id=run_id,
        dag_id="(direct)",
        source=source,
        settings=settings,
    )
    return publish(project, result, settings)
