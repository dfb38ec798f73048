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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_lib import versioning as vc
from mlops_lib.quality import DataQualityError, QualityReport, Violation, check_batch, coerce
from mlops_lib.settings import Settings, get_settings
from mlops_lib.sources import SourceError, read_source
from mlops_lib.spec import ProjectSpec, load_spec

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

DATA_FILE = "data.parquet"
REPORT_FILE = "_validation.json"
PROFILE_FILE = "_profile.bin"
LATEST_FILE = "_latest.json"


class _Timer:
    """Wall time of consecutive stages."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 3)
        self._last = now


def project_spec(project: str, settings: Settings | None = None) -> ProjectSpec:
    """The validated spec of a project from the projects folder."""
    settings = settings or get_settings()
    for suffix in (".yaml", ".yml"):
        path = settings.projects_dir / f"{project}{suffix}"
        if path.exists():
            return load_spec(path)
    raise FileNotFoundError(f"no spec for project {project!r} in {settings.projects_dir}")


def dataset_prefix(project: str) -> str:
    return f"datasets/{project}"


def partition_prefix(project: str, day: str) -> str:
    """Folder of one logical date's batch."""
    return f"{dataset_prefix(project)}/date={day}"


def open_branch(project: str, run_id: str, settings: Settings | None = None) -> dict[str, str]:
    """Create the run's ingest branch from main (recreated on a retry)."""
    settings = settings or get_settings()
    branch = vc.ingest_branch_name(run_id)
    base = vc.head(project, vc.MAIN, settings)
    vc.fresh_branch(project, branch, vc.MAIN, settings)
    log.info("lakeFS %s: branch %s created from main@%s", vc.repo_name(project), branch, base)
    return {"branch": branch, "base_commit": base}


def _previous_profile(project: str, settings: Settings) -> Any | None:
    """Profile of the last accepted batch on main, if any."""
    from mlops_lib.profiles import deserialize

    latest = f"{dataset_prefix(project)}/{LATEST_FILE}"
    if not vc.exists(project, vc.MAIN, latest, settings):
        return None
    pointer = json.loads(vc.read(project, vc.MAIN, latest, settings))
    return deserialize(vc.read(project, vc.MAIN, pointer["profile"], settings))


def _parquet_bytes(df) -> bytes:
    buf = io.BytesIO()
    try:
        df.to_parquet(buf, index=False)
    except Exception:
        # A rejected batch with mixed-type columns is kept as text for inspection.
        buf = io.BytesIO()
        df.astype("string").to_parquet(buf, index=False)
    return buf.getvalue()


def ingest_batch(
    project: str,
    branch: str,
    *,
    day: str,
    run_id: str,
    dag_id: str,
    source: str | None = None,
    partition: str | None = None,
    frame: pd.DataFrame | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Read, check, write and commit one batch on its branch.

    Writes the data as Parquet under ``datasets/<project>/date=<day>/`` (or ``partition``),
    replacing that partition, the validation report and the whylogs profile beside it, and
    commits with metadata. Returns the commit id and the verdict; never touches main.
    ``frame``: a batch already in memory (``source`` then only says where it came from).
    """
    import pandas as pd

    from mlops_lib.profiles import profile, sample, serialize

    settings = settings or get_settings()
    timer = _Timer()
    spec = project_spec(project, settings)
    vc.reset_uncommitted(project, branch, settings)
    part = partition or partition_prefix(project, day)

    try:
        if frame is not None:
            df, origin = frame, source or "(in memory)"
        else:
            df, origin = read_source(spec, override=source, base_dir=settings.repo_root)
        read_error = None
    except SourceError as exc:
        df, origin, read_error = pd.DataFrame(), source or spec.source.path or "sql", str(exc)
    timer.lap("read")

    if read_error:
        report = QualityReport(
            project=project,
            rows=0,
            columns=[],
            violations=[Violation("source", read_error)],
            checked_rules=["source"],
        )
    else:
        report = check_batch(
            df, spec, previous_profile=_previous_profile(project, settings), now=now
        )
    timer.lap("validate")
    for v in report.violations:
        (log.error if v.severity == "blocking" else log.warning)("%s", v.line())
    log.info("%s", report.summary())

    removed = vc.delete_prefix(project, branch, part + "/", settings)
    if removed:
        log.info("replacing partition %s (%d objects)", part, removed)
    rows = report.rows
    if report.passed:
        df = coerce(df, spec)
    if len(df.columns):
        vc.upload(project, branch, f"{part}/{DATA_FILE}", _parquet_bytes(df), settings=settings)
    timer.lap("write")
    vc.upload(
        project,
        branch,
        f"{part}/{REPORT_FILE}",
        json.dumps(report.to_dict(), indent=2, default=str).encode(),
        content_type="application/json",
        settings=settings,
    )
    if report.passed and rows:
        view = report.profile
        if view is None:
            view = profile(sample(df[[c for c in df.columns if c != spec.schema.key]]))
        vc.upload(project, branch, f"{part}/{PROFILE_FILE}", serialize(view), settings=settings)
        timer.lap("profile")
        pointer = {
            "partition": part,
            "data": f"{part}/{DATA_FILE}",
            "profile": f"{part}/{PROFILE_FILE}",
            "rows": rows,
            "run_id": run_id,
        }
        vc.upload(
            project,
            branch,
            f"{dataset_prefix(project)}/{LATEST_FILE}",
            json.dumps(pointer).encode(),
            content_type="application/json",
            settings=settings,
        )
    metadata = {
        "source": origin[:1000],
        "rows": rows,
        "schema_hash": spec.schema_hash(),
        "spec_hash": spec.spec_hash(),
        "dag_id": dag_id,
        "run_id": run_id,
        "partition": part,
        "rules": report.summary(),
        "passed": report.passed,
    }
    verdict = "accepted" if report.passed else "rejected"
    commit_id = vc.commit(
        project, branch, f"ingest {project} {day}: {verdict} ({rows} rows)", metadata, settings
    )
    timer.lap("commit")
    log.info("lakeFS %s: committed %s on %s", vc.repo_name(project), commit_id, branch)
    log.info("stage seconds: %s", timer.laps)
    return {
        "branch": branch,
        "commit_id": commit_id,
        "passed": report.passed,
        "rows": rows,
        "partition": part,
        "report": f"{part}/{REPORT_FILE}",
        "summary": report.summary(),
        "seconds": timer.laps,
    }


def publish(
    project: str, result: dict[str, Any], settings: Settings | None = None
) -> dict[str, Any]:
    """Merge an accepted batch into main and delete its branch; reject otherwise.

    Raises DataQualityError listing every blocking violation (read from the report on
    the branch); the branch and its report are kept for inspection and main is unchanged.
    """
    settings = settings or get_settings()
    branch = result["branch"]
    report = json.loads(vc.read(project, result["commit_id"], result["report"], settings))
    if not report["passed"]:
        violations = [Violation(**v) for v in report["violations"] if v["severity"] == "blocking"]
        raise DataQualityError(
            project, violations, where=vc.lakefs_uri(project, branch, result["report"])
        )
    main_commit = vc.merge(project, branch, vc.MAIN, settings)
    vc.delete_branch(project, branch, settings)
    meta = vc.commit_metadata(project, result["commit_id"], settings)
    from mlops_lib.lineage import lineage_store

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
        vc.repo_name(project),
        branch,
        main_commit,
    )
    return {
        "commit_id": main_commit,
        "rows": result["rows"],
        "partition": result["partition"],
        "uri": vc.lakefs_uri(project, main_commit, result["partition"]),
    }


def ingest_now(
    project: str,
    *,
    run_id: str | None = None,
    day: str | None = None,
    source: str | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
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


def read_dataset(project: str, ref: str = vc.MAIN, settings: Settings | None = None):
    """Every accepted partition of a project's dataset at a ref, as one frame."""
    settings = settings or get_settings()
    paths = [
        p
        for p in vc.list_paths(project, ref, dataset_prefix(project) + "/", settings)
        if p.endswith("/" + DATA_FILE)
    ]
    return vc.read_parquet(project, ref, paths, settings)


def local_path(path: str | Path, settings: Settings | None = None) -> Path:
    """A path as the platform resolves it (relative to the repository root)."""
    settings = settings or get_settings()
    p = Path(path)
    return p if p.is_absolute() else settings.repo_root / p
