"""Labels of served predictions: ingestion, the live metric, and production training data.

A labels batch is a CSV or Parquet file with the columns ``request_id`` (as returned by the
service), optionally ``row`` (the instance's position in the request, 0 when absent) and the
spec's target column. It is checked against the spec and the prediction log (every violation
listed at once; a rejected batch writes nothing) and stored on the lakeFS branch
``monitoring`` as ``monitoring/<project>/labels/<stamp>.parquet``.

Joined with the prediction log, labels give

* the **live metric** of a monitor run: the spec's training metric on the champion's
  labelled predictions of the labels batches that arrived since the previous report;
* **production training data** for continuous training (:mod:`mlops_lib.continuous_training`
  folds them into ``main``).
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from mlops_lib import layout
from mlops_lib import versioning as vc
from mlops_lib.layout import MONITORING_BRANCH
from mlops_lib.quality import DataQualityError, Violation, examples
from mlops_lib.settings import Settings, get_settings
from mlops_lib.sources import SourceError, confine, local_path, read_file
from mlops_lib.spec import ProjectSpec, project_spec

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

REQUEST_ID = layout.REQUEST_ID
ROW = layout.ROW


class StoredLabels(TypedDict):
    """A labels batch stored on the monitoring branch."""

    commit_id: str
    path: str
    rows: int


def check_labels(
    frame: pd.DataFrame, spec: ProjectSpec, known: set[tuple[str, int]] | None
) -> list[Violation]:
    """Every problem of a labels batch (empty when it can be stored).

    ``known``: the (request id, row) pairs of the prediction log; labels for predictions the
    platform never served are rejected, since nothing could be joined with them.
    """
    target = spec.target.column
    problems = [
        Violation("labels_schema", "required column is missing", column)
        for column in (REQUEST_ID, target)
        if column not in frame.columns
    ]
    if not len(frame):
        problems.append(Violation("labels_schema", "the batch has no rows"))
    if problems:
        return problems
    keys = _Keys.of(frame)
    problems += _check_keys(frame, keys)
    problems += _check_values(frame[target], spec)
    if known is not None:
        problems += _check_known(keys, known)
    return problems


@dataclass(frozen=True)
class _Keys:
    """A labels batch's prediction keys: request ids as text, and the ``row`` column as
    given (0 when absent), as numbers (NaN where not one) and as integers (-1 there)."""

    ids: pd.Series
    raw: pd.Series
    numeric: pd.Series

    @classmethod
    def of(cls, frame: pd.DataFrame) -> _Keys:
        import pandas as pd  # heavy: kept out of DAG parsing

        raw = frame[ROW] if ROW in frame.columns else pd.Series(0, index=frame.index)
        return cls(frame[REQUEST_ID].astype("string"), raw, pd.to_numeric(raw, errors="coerce"))

    @cached_property
    def rows(self) -> pd.Series:
        return self.numeric.fillna(-1).astype("int64")


def _check_keys(frame: pd.DataFrame, keys: _Keys) -> list[Violation]:
    """Null request ids, rows that are not non-negative integers, duplicated predictions."""
    problems = []
    if (bad := frame[REQUEST_ID].isna()).any():
        problems.append(Violation("labels_schema", "null request ids", REQUEST_ID, int(bad.sum())))
    if (bad := keys.numeric.isna() | (keys.numeric < 0)).any():
        problems.append(
            Violation(
                "labels_schema",
                "row must be a non-negative integer",
                ROW,
                int(bad.sum()),
                examples(keys.raw[bad]),
            )
        )
    pairs = keys.ids + ":" + keys.rows.astype("string")
    if (dup := pairs.duplicated()).any():
        problems.append(
            Violation(
                "labels_unique",
                "a prediction is labelled more than once",
                REQUEST_ID,
                int(dup.sum()),
                examples(pairs[dup]),
            )
        )
    return problems


def _check_values(values: pd.Series, spec: ProjectSpec) -> list[Violation]:
    """Null labels, labels outside the target's allowed values, non-numbers for regression."""
    import pandas as pd  # heavy: kept out of DAG parsing

    target = spec.target.column
    problems = []
    if (bad := values.isna()).any():
        problems.append(Violation("labels_schema", "null labels", target, int(bad.sum())))
    allowed = spec.schema_.columns[target].allowed
    if allowed is not None:
        ok = values.isna() | values.astype("string").isin([str(a) for a in allowed])
        if (~ok).any():
            problems.append(
                Violation(
                    "labels_allowed",
                    f"labels outside {allowed}",
                    target,
                    int((~ok).sum()),
                    examples(values[~ok]),
                )
            )
    elif spec.target.task == "regression":
        bad = pd.to_numeric(values, errors="coerce").isna() & values.notna()
        if bad.any():
            problems.append(
                Violation(
                    "labels_type",
                    "labels must be numbers",
                    target,
                    int(bad.sum()),
                    examples(values[bad]),
                )
            )
    return problems


def _check_known(keys: _Keys, known: set[tuple[str, int]]) -> list[Violation]:
    """Labels for (request id, row) pairs the service never answered."""
    pairs = zip(keys.ids, keys.rows, strict=True)
    unknown = [f"{i}:{r}" for i, r in pairs if (i, int(r)) not in known]
    if not unknown:
        return []
    return [
        Violation(
            "labels_known",
            "no served prediction has this request id and row",
            REQUEST_ID,
            len(unknown),
            unknown[:5],
        )
    ]


def read_predictions(
    project: str, settings: Settings, columns: list[str] | None = None
) -> pd.DataFrame:
    """The whole prediction log of a project as one frame (empty when nothing was served)."""
    import pandas as pd  # heavy: kept out of DAG parsing

    if not vc.branch_exists(project, MONITORING_BRANCH, settings):
        return pd.DataFrame(columns=columns or [REQUEST_ID, ROW])
    paths = vc.list_paths(project, MONITORING_BRANCH, layout.predictions_prefix(project), settings)
    frame = vc.read_parquet(project, MONITORING_BRANCH, paths, settings, columns)
    return frame if len(frame.columns) else pd.DataFrame(columns=[REQUEST_ID, ROW])


def wait_logged(
    project: str, request_ids: set[str], settings: Settings, timeout: float = 60.0
) -> int:
    """Wait until lakeFS holds these requests' prediction log; returns how many are missing."""
    deadline = time.monotonic() + timeout
    while True:
        logged = set(read_predictions(project, settings, columns=[REQUEST_ID])[REQUEST_ID])
        missing = len(request_ids - logged)
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(1)


def ingest_labels(
    project: str,
    source: str | Path,
    *,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> StoredLabels:
    """Check a labels batch and store it on the monitoring branch.

    Raises DataQualityError listing every violation; a rejected batch writes nothing.
    """
    settings = settings or get_settings()
    spec = project_spec(project, settings)
    path = local_path(source, settings)
    try:
        frame = read_file(confine(path, settings.allowed_data_roots))
    except (OSError, SourceError) as exc:
        raise DataQualityError(project, [Violation("source", str(exc))], where=str(path)) from exc
    served = read_predictions(project, settings, columns=[REQUEST_ID, ROW])
    known = set(zip(served[REQUEST_ID].astype(str), served[ROW].astype(int), strict=True))
    problems = check_labels(frame, spec, known)
    if problems:
        raise DataQualityError(project, problems, where=str(path))
    out = frame[[REQUEST_ID, spec.target.column]].copy()
    out[REQUEST_ID] = out[REQUEST_ID].astype(str)
    out.insert(1, ROW, frame[ROW].astype("int64") if ROW in frame.columns else 0)
    return _store_labels(spec, out, path, now or datetime.now(UTC), settings)


def _store_labels(
    spec: ProjectSpec, out: pd.DataFrame, path: Path, now: datetime, settings: Settings
) -> StoredLabels:
    """Write a checked labels batch as Parquet on the monitoring branch and commit it."""
    project = spec.name
    target = layout.labels_path(project, now)
    buf = io.BytesIO()
    out.to_parquet(buf, index=False)
    vc.ensure_branch(project, MONITORING_BRANCH, settings=settings)
    vc.upload(project, MONITORING_BRANCH, target, buf.getvalue(), settings=settings)
    commit = vc.commit(
        project,
        MONITORING_BRANCH,
        f"labels of {len(out)} predictions of {project}",
        {"source": str(path)[:1000], "rows": str(len(out)), "kind": "labels"},
        settings,
    )
    log.info(
        "lakeFS %s: %d labels stored at %s (commit %s)",
        layout.repo_name(project),
        len(out),
        target,
        commit,
    )
    return {"commit_id": commit, "path": target, "rows": len(out)}


def labelled_predictions(
    spec: ProjectSpec,
    settings: Settings,
    *,
    after: str = "",
) -> tuple[pd.DataFrame, list[str]]:
    """Served rows joined with the labels of the batches stamped after ``after``.

    Returns the joined frame (prediction-log columns plus the target) and the labels files used.
    """
    import pandas as pd  # heavy: kept out of DAG parsing

    project = spec.name
    if not vc.branch_exists(project, MONITORING_BRANCH, settings):
        return pd.DataFrame(), []
    files = sorted(
        p
        for p in vc.list_paths(project, MONITORING_BRANCH, layout.labels_prefix(project), settings)
        if layout.stamp_of(p) > after
    )
    if not files:
        return pd.DataFrame(), []
    labels = vc.read_parquet(project, MONITORING_BRANCH, files, settings).drop_duplicates(
        [REQUEST_ID, ROW], keep="last"
    )
    served = read_predictions(project, settings)
    served = served.drop(columns=[spec.target.column], errors="ignore")
    served[REQUEST_ID] = served[REQUEST_ID].astype(str)
    served[ROW] = served[ROW].astype("int64")
    return served.merge(labels, on=[REQUEST_ID, ROW], how="inner"), files
