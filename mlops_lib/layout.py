"""The lakeFS layout of the platform: every repository, branch and object path rule.

One repository per project (``<project>`` with ``_`` -> ``-``), two long-lived branches:

* ``main``: accepted data, ``datasets/<project>/``

  * ``date=<day>/`` one partition per ingested batch: ``data.parquet``, the validation
    report ``_validation.json`` and the whylogs profile ``_profile.bin``;
  * ``production/labels-through=<stamp>/`` labelled production rows folded in by
    continuous training;
  * ``_latest.json`` the pointer to the last accepted batch (its profile);

* ``monitoring``: what serving and monitoring write, ``monitoring/<project>/``

  * ``predictions/date=../hour=../<file>.parquet`` the prediction log;
  * ``labels/<stamp>.parquet`` labels of served predictions;
  * ``reference/v<version>/profile.bin`` each model version's reference profile;
  * ``profiles/date=../hour=../profile-<n>.bin`` one profile per closed hour window, of its
    ``n`` prediction-log files (made again when files of the window are shipped late);
  * ``reports/<stamp>/report.{json,html}`` drift reports.

* ``features/<project>/`` on ``main``, written by the features DAG from one run's event
  files: ``sources/<source>/data.parquet`` each event table as landed, and
  ``views/<view>/data.parquet`` each feature view computed from them (what Feast's offline
  store reads, at an exact commit) and ``_features.json`` the hash of the spec's
  ``features:`` they were computed under.

Ingest runs work on short-lived branches ``ingest-<run id>``, feature runs on
``features-<run id>``. Nothing here does I/O.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

MAIN = "main"
MONITORING_BRANCH = "monitoring"

DATA_FILE = "data.parquet"
REPORT_FILE = "_validation.json"
PROFILE_FILE = "_profile.bin"
LATEST_FILE = "_latest.json"
PRODUCTION = "production"
LABELS_THROUGH = "labels-through="
# Where a served row came from: the request id the service answered with and the row's
# position in the request. The prediction log and labels are keyed by them, and production
# rows folded into a dataset keep them as columns of their own (never in a user's column).
REQUEST_ID = "request_id"
ROW = "row"
PROVENANCE_COLUMNS = (REQUEST_ID, ROW)
# Every column the prediction log adds beside a served row's own: no spec column may be
# named like one of them.
LOGGED_COLUMNS = (*PROVENANCE_COLUMNS, "ts", "model_version", "prediction", "score")

_BRANCH_SAFE = re.compile(r"[^A-Za-z0-9_-]+")
_WINDOW = re.compile(r"date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/")
_STAMP = re.compile(r"(\d{8}T\d{6}\d*)")


# Repositories, branches, URIs ------------------------------------------------------
def repo_name(project: str) -> str:
    """lakeFS repository of a project (lakeFS names allow lowercase, digits and '-')."""
    return project.replace("_", "-")


def lakefs_uri(project: str, ref: str, path: str = "") -> str:
    """lakefs://<repo>/<ref>/<path> URI of a path at a ref."""
    return f"lakefs://{repo_name(project)}/{ref}/{path}".rstrip("/")


def _run_branch(kind: str, run_id: str) -> str:
    """``<kind>-<run id>`` as a lakeFS branch id (which allows no '/' or ':')."""
    return f"{kind}-" + _BRANCH_SAFE.sub("-", run_id).strip("-")[:200]


def ingest_branch_name(run_id: str) -> str:
    """Branch of one ingest run: ``ingest-<run id>``."""
    return _run_branch("ingest", run_id)


def features_branch_name(run_id: str) -> str:
    """Branch of one features run: ``features-<run id>``."""
    return _run_branch("features", run_id)


# Feature tables on main ---------------------------------------------------------------
def features_prefix(project: str) -> str:
    return f"features/{project}"


def feature_source_path(project: str, source: str) -> str:
    """One event table of the feature store, as the features DAG landed it."""
    return f"{features_prefix(project)}/sources/{source}/{DATA_FILE}"


def feature_spec_path(project: str) -> str:
    """What the tables were computed under (the hash of the spec's ``features:``)."""
    return f"{features_prefix(project)}/_features.json"


def feature_view_path(project: str, view: str) -> str:
    """One feature view's table (entity key, ``event_timestamp``, its features)."""
    return f"{features_prefix(project)}/views/{view}/{DATA_FILE}"


# Datasets on main ------------------------------------------------------------------
def dataset_prefix(project: str) -> str:
    return f"datasets/{project}"


def partition_prefix(project: str, day: str) -> str:
    """Folder of one logical date's batch."""
    return f"{dataset_prefix(project)}/date={day}"


def latest_pointer(project: str) -> str:
    """The pointer to the last accepted batch."""
    return f"{dataset_prefix(project)}/{LATEST_FILE}"


def is_data_file(path: str) -> bool:
    """Whether an object of the dataset prefix is a partition's data."""
    return path.endswith("/" + DATA_FILE)


def production_prefix(project: str) -> str:
    """Where folded-in labelled production batches live on ``main``."""
    return f"{dataset_prefix(project)}/{PRODUCTION}/"


def production_partition(project: str, through: str) -> str:
    """Partition of the labelled production rows of the labels batches through a stamp."""
    return f"{production_prefix(project)}{LABELS_THROUGH}{through}"


# Time stamps in object names --------------------------------------------------------
def stamp(when: datetime) -> str:
    """The sortable UTC time stamp of a labels file (``YYYYmmddTHHMMSSffffff``)."""
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%S%f")


def stamp_of(path: str) -> str:
    """The sortable time stamp in a labels file or production partition name."""
    m = _STAMP.search(path.rsplit("/", 1)[-1]) or _STAMP.search(path)
    return m.group(1) if m else ""


_PROFILED = re.compile(r"/profile-(\d+)\.bin$")


def window_of(path: str) -> datetime | None:
    """The hour window an object path belongs to (``date=../hour=..``), if any."""
    m = _WINDOW.search(path)
    if not m:
        return None
    return datetime.strptime(f"{m.group(1)} {m.group(2)}", "%Y-%m-%d %H").replace(tzinfo=UTC)


# The monitoring branch ---------------------------------------------------------------
def monitoring_prefix(project: str) -> str:
    return f"monitoring/{project}"


def predictions_prefix(project: str) -> str:
    """lakeFS prefix of a project's prediction log."""
    return f"{monitoring_prefix(project)}/predictions/"


def prediction_log_path(project: str, hour: datetime, name: str) -> str:
    """Object path of one spooled prediction-log file in its hourly window."""
    return f"{predictions_prefix(project)}date={hour:%Y-%m-%d}/hour={hour:%H}/{name}"


def labels_prefix(project: str) -> str:
    return f"{monitoring_prefix(project)}/labels/"


def labels_path(project: str, when: datetime) -> str:
    """Object path of a labels batch stored at a time."""
    return f"{labels_prefix(project)}{stamp(when)}.parquet"


def reference_path(project: str, version: int | str) -> str:
    return f"{monitoring_prefix(project)}/reference/v{version}/profile.bin"


def profiles_prefix(project: str) -> str:
    return f"{monitoring_prefix(project)}/profiles/"


def window_profile_path(project: str, hour: datetime, files: int) -> str:
    """A window's profile, named after how many prediction-log files it covers."""
    return f"{profiles_prefix(project)}date={hour:%Y-%m-%d}/hour={hour:%H}/profile-{files}.bin"


def profiled_files(path: str) -> int:
    """How many prediction-log files a window profile covers (0 when its name does not say)."""
    m = _PROFILED.search(path)
    return int(m.group(1)) if m else 0


def report_folder(project: str, report_stamp: str) -> str:
    """Folder of one drift report (``report.json`` and ``report.html``)."""
    return f"{monitoring_prefix(project)}/reports/{report_stamp}"
