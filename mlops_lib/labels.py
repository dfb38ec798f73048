"""Labels of served predictions: ingestion, the live metric, and production training data.

A labels batch is a CSV or Parquet file with the columns ``request_id`` (as returned by the
service), optionally ``row`` (the instance's position in the request, 0 when absent) and the
spec's target column. It is checked against the spec and the prediction log (every violation
listed at once; a rejected batch writes nothing) and stored on the lakeFS branch
``monitoring`` as ``monitoring/<project>/labels/<stamp>.parquet``.

Joined with the prediction log, labels give

* the **live metric** of a monitor run: the spec's training metric on the champion's
  labelled predictions of the labels batches that arrived since the previous report;
* **production training data** for continuous training: labelled rows not used yet, as a
  batch with the spec's schema (key ``<request_id>:<row>``, event time the prediction time)
  that goes through the same quality gate onto ``main``, under
  ``datasets/<project>/production/labels-through=<stamp>/``.
"""

from __future__ import annotations

import io
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_lib.quality import DataQualityError, Violation, _examples
from mlops_lib.serving.prediction_log import MONITORING_BRANCH, predictions_prefix
from mlops_lib.settings import Settings, get_settings
from mlops_lib.spec import ProjectSpec

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

REQUEST_ID = "request_id"
ROW = "row"
_STAMP = re.compile(r"(\d{8}T\d{6}\d*)")
PRODUCTION = "production"


def stamp(when: datetime) -> str:
    """The sortable UTC time stamp of a labels file (``YYYYmmddTHHMMSSffffff``)."""
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%S%f")


def labels_prefix(project: str) -> str:
    return f"monitoring/{project}/labels/"


def production_prefix(project: str) -> str:
    """Where folded-in labelled production batches live on ``main``."""
    return f"datasets/{project}/{PRODUCTION}/"


def stamp_of(path: str) -> str:
    """The sortable time stamp in a labels file or production partition name."""
    m = _STAMP.search(path.rsplit("/", 1)[-1]) or _STAMP.search(path)
    return m.group(1) if m else ""


def check_labels(
    frame: pd.DataFrame, spec: ProjectSpec, known: set[tuple[str, int]] | None
) -> list[Violation]:
    """Every problem of a labels batch (empty when it can be stored).

    ``known``: the (request id, row) pairs of the prediction log; labels for predictions the
    platform never served are rejected, since nothing could be joined with them.
    """
    import pandas as pd

    target = spec.target.column
    problems: list[Violation] = []
    for column in (REQUEST_ID, target):
        if column not in frame.columns:
            problems.append(Violation("labels_schema", "required column is missing", column))
    if not len(frame):
        problems.append(Violation("labels_schema", "the batch has no rows"))
    if problems:
        return problems
    ids = frame[REQUEST_ID]
    if (bad := ids.isna()).any():
        problems.append(Violation("labels_schema", "null request ids", REQUEST_ID, int(bad.sum())))
    rows = frame[ROW] if ROW in frame.columns else pd.Series(0, index=frame.index)
    numeric_rows = pd.to_numeric(rows, errors="coerce")
    row_numbers = numeric_rows.fillna(-1).astype("int64")
    id_strings = ids.astype("string")
    if (bad := numeric_rows.isna() | (numeric_rows < 0)).any():
        problems.append(
            Violation(
                "labels_schema",
                "row must be a non-negative integer",
                ROW,
                int(bad.sum()),
                _examples(rows[bad]),
            )
        )
    keys = id_strings + ":" + row_numbers.astype("string")
    if (dup := keys.duplicated()).any():
        problems.append(
            Violation(
                "labels_unique",
                "a prediction is labelled more than once",
                REQUEST_ID,
                int(dup.sum()),
                _examples(keys[dup]),
            )
        )
    values = frame[target]
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
                    _examples(values[~ok]),
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
                    _examples(values[bad]),
                )
            )
    if known is not None:
        pairs = zip(id_strings, row_numbers, strict=True)
        unknown = [f"{i}:{r}" for i, r in pairs if (i, int(r)) not in known]
        if unknown:
            problems.append(
                Violation(
                    "labels_known",
                    "no served prediction has this request id and row",
                    REQUEST_ID,
                    len(unknown),
                    unknown[:5],
                )
            )
    return problems


def read_predictions(project: str, settings: Settings, columns: list[str] | None = None):
    """The whole prediction log of a project as one frame (empty when nothing was served)."""
    import pandas as pd

    from mlops_lib import versioning as vc

    if not vc.branch_exists(project, MONITORING_BRANCH, settings):
        return pd.DataFrame(columns=columns or [REQUEST_ID, ROW])
    paths = vc.list_paths(project, MONITORING_BRANCH, predictions_prefix(project), settings)
    frame = vc.read_parquet(project, MONITORING_BRANCH, paths, settings, columns)
    return frame if len(frame.columns) else pd.DataFrame(columns=[REQUEST_ID, ROW])


def wait_logged(
    project: str, request_ids: set[str], settings: Settings, timeout: float = 60.0
) -> int:
    """Wait until lakeFS holds these requests' prediction log; returns how many are missing."""
    import time

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
) -> dict[str, Any]:
    """Check a labels batch and store it on the monitoring branch.

    Raises DataQualityError listing every violation; a rejected batch writes nothing.
    """
    from mlops_lib import versioning as vc
    from mlops_lib.ingest import local_path, project_spec
    from mlops_lib.sources import SourceError, read_file

    settings = settings or get_settings()
    spec = project_spec(project, settings)
    path = local_path(source, settings)
    try:
        frame = read_file(path)
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
    now = now or datetime.now(UTC)
    target = f"{labels_prefix(project)}{stamp(now)}.parquet"
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
        vc.repo_name(project),
        len(out),
        target,
        commit,
    )
    return {"commit_id": commit, "path": target, "rows": len(out)}


def labelled_predictions(
    project: str,
    settings: Settings,
    *,
    after: str = "",
) -> tuple[pd.DataFrame, list[str]]:
    """Served rows joined with the labels of the batches stamped after ``after``.

    Returns the joined frame (prediction-log columns plus the target) and the labels files used.
    """
    import pandas as pd

    from mlops_lib import versioning as vc
    from mlops_lib.ingest import project_spec

    spec = project_spec(project, settings)
    if not vc.branch_exists(project, MONITORING_BRANCH, settings):
        return pd.DataFrame(), []
    files = sorted(
        p
        for p in vc.list_paths(project, MONITORING_BRANCH, labels_prefix(project), settings)
        if stamp_of(p) > after
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


def live_metric(spec: ProjectSpec, frame: pd.DataFrame) -> dict[str, Any]:
    """The spec's training metric on labelled predictions, with what it could not compute."""
    from sklearn import metrics

    name = spec.training.metric
    out: dict[str, Any] = {"metric": name, "value": None, "rows": len(frame)}
    if not len(frame):
        out["note"] = "no labelled predictions"
        return out
    y = frame[spec.target.column]
    if spec.target.task == "classification":
        y = y.astype("string")
        pred = frame["prediction"].astype("string")
        positive = str(spec.target.positive_class if spec.target.positive_class is not None else 1)
        if name == "roc_auc":
            if y.nunique() < 2:
                out["note"] = "roc_auc needs both classes among the labels"
                return out
            value = metrics.roc_auc_score(y == positive, frame["score"].astype(float))
        elif name == "f1":
            value = metrics.f1_score(y == positive, pred == positive)
        elif name == "log_loss":
            value = metrics.log_loss(
                y == positive, frame["score"].astype(float), labels=[False, True]
            )
        else:
            value = metrics.accuracy_score(y, pred)
            out["metric"] = "accuracy"
    else:
        y = y.astype(float)
        pred = frame["prediction"].astype(float)
        value = {
            "rmse": lambda: metrics.mean_squared_error(y, pred) ** 0.5,
            "mae": lambda: metrics.mean_absolute_error(y, pred),
        }.get(name, lambda: metrics.r2_score(y, pred))()
        if name not in ("rmse", "mae"):
            out["metric"] = "r2"
    out["value"] = round(float(value), 6)
    return out


def production_batch(spec: ProjectSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """Labelled served rows in the spec's schema, ready for the quality gate."""
    schema = spec.schema_
    out = frame[[c for c in spec.features if c in frame.columns]].copy()
    out[schema.key] = frame[REQUEST_ID].astype(str) + ":" + frame[ROW].astype(str)
    if schema.event_time:
        out[schema.event_time] = frame["ts"]
    out[spec.target.column] = frame[spec.target.column]
    return out[[c for c in schema.columns if c in out.columns]]


def fold_in(project: str, run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Bring labelled production rows not used yet onto ``main``, through the quality gate.

    Returns the ``main`` commit to train on: the merge of the production batch, or main's
    head when there is nothing new or the batch is rejected (the reason is logged and
    returned; those labels are tried again next time).
    """
    from mlops_lib import versioning as vc
    from mlops_lib.ingest import ingest_batch, open_branch, project_spec, publish

    settings = settings or get_settings()
    spec = project_spec(project, settings)
    folded = [
        stamp_of(p)
        for p in vc.list_paths(project, vc.MAIN, production_prefix(project), settings)
        if "labels-through=" in p
    ]
    through = max(folded, default="")
    frame, files = labelled_predictions(project, settings, after=through)
    head = vc.head(project, vc.MAIN, settings)
    if not files:
        log.info("no new labelled production data; training on main %s", head)
        return {"commit_id": head, "production_rows": 0, "note": "no new labels"}
    newest = stamp_of(files[-1])
    batch = production_batch(spec, frame)
    opened = open_branch(project, run_id, settings)
    result = ingest_batch(
        project,
        opened["branch"],
        day=datetime.now(UTC).strftime("%Y-%m-%d"),
        run_id=run_id,
        dag_id="continuous_training",
        source=f"prediction log labelled by {', '.join(files)}",
        partition=f"{production_prefix(project)}labels-through={newest}",
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
        vc.repo_name(project),
        len(batch),
        newest,
        published["commit_id"],
    )
    return {
        "commit_id": published["commit_id"],
        "production_rows": len(batch),
        "labels_files": files,
    }
