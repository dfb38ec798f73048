"""The feature store's work on versioned data: views from a lakeFS commit, Feast repos,
materialization and point-in-time training sets.

The ``<project>__features`` DAG calls :func:`build_views` (land each event table, checked,
and compute the feature views from it, on a branch ``features-<run id>`` merged into
``main``) and :func:`publish_views` (the Feast repo of that commit applied, the online
store materialized from it, the feature server pointed at it). Training calls
:func:`training_set`: the labelled rows joined point-in-time with the views of the same
commit, through Feast's ``get_historical_features``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from mlops_lib import layout
from mlops_lib import versioning as vc
from mlops_lib.feature_store import paths, repo, runner
from mlops_lib.feature_store.views import (
    EVENT_TIMESTAMP,
    check_source,
    compute_view,
    join_key,
    store_spec,
)
from mlops_lib.layout import MAIN
from mlops_lib.settings import Settings, get_settings
from mlops_lib.sources import local_path, read_file, resolve_paths
from mlops_lib.spec import STORE_FEATURE_SEPARATOR, ProjectSpec, project_spec
from mlops_lib.stack.procs import file_lock, write_atomically

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
TRAINING_SET_FILE = "training_set.parquet"
_COMMIT = re.compile(r"[0-9a-f]{8,64}")
# Materialization starts here: every row of a view table is older.
HISTORY_START = datetime(1970, 1, 2, tzinfo=UTC)


class FeatureTablesMissing(RuntimeError):
    """A commit has no feature view tables: the features DAG has not run on its data."""


class BuiltViews(TypedDict):
    """A features run's result: the ``main`` commit holding its tables and their rows."""

    commit_id: str
    sources: dict[str, int]
    views: dict[str, int]


class FeatureRepo(TypedDict):
    """The Feast repo of one commit, applied."""

    commit_id: str
    path: str
    registry_hash: str
    feature_views: list[str]


class PublishedViews(FeatureRepo):
    """A commit's views in the online store, served by the project's feature server."""

    materialized_from: str
    materialized_to: str
    server_url: str


# Building: event tables -> views, on lakeFS ------------------------------------------
def build_views(project: str, run_id: str, settings: Settings | None = None) -> BuiltViews:
    """Land every event table and compute every view of a project, then merge to main.

    Every source is read and checked before anything is written, so a source with bad
    rows (FeatureSourceError listing every violation) leaves ``main`` as it was.
    """
    settings = settings or get_settings()
    spec = project_spec(project, settings)
    events = {name: read_source_table(spec, name, settings) for name in _store(spec).sources}
    views = {
        name: compute_view(events[v.source], spec, name) for name, v in _store(spec).views.items()
    }
    branch = layout.features_branch_name(run_id)
    vc.fresh_branch(project, branch, MAIN, settings)
    tables = {layout.feature_source_path(project, n): f for n, f in events.items()}
    tables |= {layout.feature_view_path(project, n): f for n, f in views.items()}
    for path, frame in tables.items():
        vc.upload(project, branch, path, _parquet(frame), settings=settings)
    computed = json.dumps({"features_hash": spec.features_hash()}).encode()
    vc.upload(project, branch, layout.feature_spec_path(project), computed, settings=settings)
    commit = _commit_and_merge(spec, branch, run_id, settings)
    _record_dataset(spec, commit, run_id, settings)
    log.info(
        "features of %s at main@%s: %s", project, commit, {n: len(f) for n, f in views.items()}
    )
    return {
        "commit_id": commit,
        "sources": {n: len(f) for n, f in events.items()},
        "views": {n: len(f) for n, f in views.items()},
    }


def _record_dataset(spec: ProjectSpec, commit: str, run_id: str, settings: Settings) -> None:
    """The commit in the lineage store: the dataset it holds, now with its feature views
    (training on it links to this row as to an ingest's)."""
    from mlops_lib.lineage import lineage_store  # SQLAlchemy: kept out of DAG parsing

    store = lineage_store(settings)
    before = next(iter(store.datasets(spec.name)), None)
    store.record_dataset(
        project=spec.name,
        commit_id=commit,
        rows=int(before["rows"]) if before else 0,
        schema_hash=before["schema_hash"] if before else spec.schema_hash(),
        rule_summary=before["rule_summary"] if before else "",
        source=f"feature views {', '.join(_store(spec).views)} computed",
        partition=layout.features_prefix(spec.name),
        dag_run_id=run_id,
    )


def read_source_table(spec: ProjectSpec, source: str, settings: Settings) -> pd.DataFrame:
    """Every file of an event source as one checked frame (FeatureSourceError otherwise)."""
    import pandas as pd

    declared = _store(spec).sources[source]
    files = resolve_paths(declared.path, local_path(".", settings), settings.allowed_data_roots)
    frame = pd.concat([read_file(f, declared.format) for f in files], ignore_index=True)
    return check_source(frame, spec, source)


def _commit_and_merge(spec: ProjectSpec, branch: str, run_id: str, settings: Settings) -> str:
    """Commit the run's tables and merge them into main; unchanged tables change nothing."""
    project = spec.name
    commit = vc.head(project, MAIN, settings)
    if any(True for _ in vc.repository(project, settings).branch(branch).uncommitted()):
        metadata = {"run_id": run_id, "spec_hash": spec.spec_hash(), "kind": "features"}
        try:
            vc.commit(project, branch, f"features of {project} ({run_id})", metadata, settings)
        except Exception as exc:  # the same bytes written again: lakeFS sees no change
            if "no changes" not in str(exc).lower():
                raise
        else:
            commit = vc.merge(project, branch, MAIN, settings)
    vc.delete_branch(project, branch, settings)
    return commit


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


# The Feast repo of a commit -----------------------------------------------------------
def ensure_repo(spec: ProjectSpec, commit: str, settings: Settings) -> FeatureRepo:
    """The applied Feast repo of a commit, made on first use (view tables read from lakeFS).

    Several processes may ask at once (trial tasks, workers): one builds, under a lock, and
    the others find its repo; a repo, once in place, is never changed or removed.
    """
    if not _COMMIT.fullmatch(commit):
        raise ValueError(f"not a lakeFS commit id: {commit!r}")
    definitions = repo.definitions_text(spec, commit)
    digest = repo.registry_hash(definitions)
    target = paths.commit_repo(settings, spec.name, commit, digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock"):
        if not (target / repo.DEFINITIONS_FILE).is_file():
            _make_repo(spec, commit, definitions, target, settings)
    return {
        "commit_id": commit,
        "path": str(target),
        "registry_hash": digest,
        "feature_views": list(_store(spec).views),
    }


def _make_repo(
    spec: ProjectSpec, commit: str, definitions: str, target: Path, settings: Settings
) -> None:
    """Write and apply the repo in a scratch folder, then move it into place at once."""
    _check_computed_under(spec, commit, settings)
    paths.online_store(settings, spec.name).parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".repo-", dir=target.parent))
    try:
        _write_repo(spec, commit, definitions, scratch, settings)
        runner.run(settings, "apply", {"repo": str(scratch)})
        os.replace(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_repo(
    spec: ProjectSpec, commit: str, definitions: str, folder: Path, settings: Settings
) -> None:
    """A commit's Feast repo files in ``folder``: its view tables, config and definitions."""
    (folder / repo.DATA_DIR).mkdir()
    for view in _store(spec).views:
        _fetch_view(spec, view, commit, folder / repo.view_file(view), settings)
    online = paths.online_store(settings, spec.name)
    (folder / repo.CONFIG_FILE).write_text(repo.config_text(spec, online))
    (folder / repo.DEFINITIONS_FILE).write_text(definitions)


def _check_computed_under(spec: ProjectSpec, commit: str, settings: Settings) -> None:
    """The commit's tables must come from this ``features:`` section (FeatureTablesMissing
    otherwise: training on views computed under other windows or filters would be wrong)."""
    path = layout.feature_spec_path(spec.name)
    where = layout.lakefs_uri(spec.name, commit[:12], path)
    if not vc.exists(spec.name, commit, path, settings):
        raise FeatureTablesMissing(
            f"no feature views at {where}: run {spec.name}__features on this data first"
        )
    computed = json.loads(vc.read(spec.name, commit, path, settings)).get("features_hash")
    if computed != spec.features_hash():
        raise FeatureTablesMissing(
            f"the feature views at {where} were computed under another features section "
            f"(hash {computed}; the spec's is {spec.features_hash()}): run "
            f"{spec.name}__features to compute them again"
        )


def _fetch_view(spec: ProjectSpec, view: str, commit: str, out: Path, settings: Settings) -> None:
    path = layout.feature_view_path(spec.name, view)
    if not vc.exists(spec.name, commit, path, settings):
        raise FeatureTablesMissing(
            f"no table of feature view {view!r} at lakeFS "
            f"{layout.lakefs_uri(spec.name, commit[:12], path)}: run {spec.name}__features "
            "on this data first"
        )
    out.write_bytes(vc.read(spec.name, commit, path, settings))


# Publishing: online store and feature server ------------------------------------------
def publish_views(
    project: str, built: BuiltViews, settings: Settings | None = None
) -> PublishedViews:
    """Materialize a commit's views into the online store and serve them.

    Materialized is the whole history up to now, not only what is newer than the last run:
    the online store then holds each entity's latest value whatever its age, rows that
    arrived late included (a view's TTL bounds training sets; Feast's online reads do not
    apply it).
    """
    from mlops_lib.feature_store import server  # starts a process: kept out of imports

    settings = settings or get_settings()
    spec = project_spec(project, settings)
    applied = ensure_repo(spec, built["commit_id"], settings)
    # One publication at a time: a materialization and its pointer stay together.
    with file_lock(paths.store_dir(settings, project) / ".publish.lock"):
        end, start = datetime.now(UTC), HISTORY_START
        runner.run(
            settings,
            "materialize",
            {"repo": applied["path"], "start_date": start.isoformat(), "end_date": end.isoformat()},
        )
        _point_current(spec, applied, settings)
        url = server.ensure_running(project, settings)
        published: PublishedViews = {
            **applied,
            "materialized_from": start.isoformat(),
            "materialized_to": end.isoformat(),
            "server_url": url,
        }
        write_atomically(paths.current_file(settings, project), json.dumps(published, indent=2))
    return published


def _point_current(spec: ProjectSpec, applied: FeatureRepo, settings: Settings) -> None:
    """Swap the ``current`` link to the commit's repo in one step."""
    link = paths.current_repo(settings, spec.name)
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(applied["path"], target_is_directory=True)
    os.replace(tmp, link)


def published(project: str, settings: Settings | None = None) -> PublishedViews | None:
    """What the online store was last materialized from, if anything."""
    settings = settings or get_settings()
    try:
        return json.loads(paths.current_file(settings, project).read_text())
    except (OSError, ValueError):
        return None


# Training sets -------------------------------------------------------------------------
def training_set(
    df: pd.DataFrame, spec: ProjectSpec, commit: str, settings: Settings
) -> pd.DataFrame:
    """The labelled rows with the model's store features joined point-in-time.

    Each row gets, per view, the latest values at or before its event time and within the
    view's TTL (nulls otherwise), through Feast's ``get_historical_features`` on the Feast
    repo of the same commit. Computed once per commit and machine, then read back.
    """
    import pandas as pd

    applied = ensure_repo(spec, commit, settings)
    entity_df = _entity_frame(df, spec)
    cached = Path(applied["path"]) / _training_set_name(entity_df, spec)
    if not cached.is_file():
        _historical(entity_df, spec, applied, cached, settings)
    joined = pd.read_parquet(cached)
    if len(joined) != len(df):
        raise RuntimeError(f"{cached}: {len(joined)} rows for {len(df)} labelled rows")
    out = df.copy()
    for name in spec.store_features:
        out[name] = joined[name].to_numpy()
    return out


def _entity_frame(df: pd.DataFrame, spec: ProjectSpec) -> pd.DataFrame:
    """The labelled rows as Feast's entity frame: join key and event time, in row order."""
    import pandas as pd

    key = _join_key(spec)
    return pd.DataFrame(
        {
            key: df[key].to_numpy(),
            EVENT_TIMESTAMP: pd.to_datetime(df[spec.schema.event_time], utc=True).to_numpy(),
        }
    )


def _training_set_name(entity_df: pd.DataFrame, spec: ProjectSpec) -> str:
    """The cached training set's file: named by the rows asked for and the features."""
    import pandas as pd

    digest = hashlib.sha256(pd.util.hash_pandas_object(entity_df, index=False).to_numpy())
    digest.update(json.dumps(repo.feature_refs(spec)).encode())
    return f"{Path(TRAINING_SET_FILE).stem}-{digest.hexdigest()[:16]}.parquet"


def _historical(
    entity_df: pd.DataFrame,
    spec: ProjectSpec,
    applied: FeatureRepo,
    out: Path,
    settings: Settings,
) -> None:
    with tempfile.TemporaryDirectory(dir=applied["path"]) as scratch:
        entities = Path(scratch) / "entities.parquet"
        entity_df.to_parquet(entities, index=False)
        answer = Path(scratch) / TRAINING_SET_FILE
        runner.run(
            settings,
            "historical",
            {
                "repo": applied["path"],
                "entity_df": str(entities),
                "features": repo.feature_refs(spec),
                "output": str(answer),
                "full_feature_names": True,
            },
        )
        os.replace(answer, out)


def _join_key(spec: ProjectSpec) -> str:
    """The join key of the model's views (the spec gives the model one entity's views)."""
    return join_key(spec, _store(spec).model[0])


class FeatureLineage(TypedDict):
    """What a training set records of its features (MLflow tags, the lineage store)."""

    commit: str
    registry_hash: str
    views: str


def feature_lineage(applied: FeatureRepo) -> FeatureLineage:
    return {
        "commit": applied["commit_id"],
        "registry_hash": applied["registry_hash"],
        "views": ",".join(applied["feature_views"]),
    }


_store = store_spec


# What `mlops features plan|apply|list` do ------------------------------------------------
def plan(project: str, settings: Settings | None = None) -> str:
    """What applying the spec's views at ``main``'s head would change in the published
    registry (Feast's ``plan`` text; everything is new when nothing was published)."""
    settings = settings or get_settings()
    spec = project_spec(project, settings)
    commit = vc.head(project, MAIN, settings)
    current = paths.current_repo(settings, project)
    with tempfile.TemporaryDirectory(prefix="feature-plan-") as scratch:
        folder = Path(scratch)
        _write_repo(spec, commit, repo.definitions_text(spec, commit), folder, settings)
        if (current / repo.REGISTRY_FILE).exists():
            shutil.copy(current / repo.REGISTRY_FILE, folder / repo.REGISTRY_FILE)
        return str(runner.run(settings, "plan", {"repo": str(folder)})["plan"])


def apply(project: str, settings: Settings | None = None) -> PublishedViews:
    """Register and materialize the spec's views as computed at ``main``'s head."""
    settings = settings or get_settings()
    commit = vc.head(project, MAIN, settings)
    return publish_views(project, {"commit_id": commit, "sources": {}, "views": {}}, settings)


def describe(project: str, settings: Settings | None = None) -> dict:
    """The published registry: entities and views (features, TTL, materialized intervals),
    with the commit they were computed from (empty when nothing was published)."""
    settings = settings or get_settings()
    current = published(project, settings)
    if current is None:
        return {"project": project, "commit_id": None, "entities": [], "feature_views": []}
    listed = runner.run(settings, "list", {"repo": current["path"]})
    return {
        **listed,
        "commit_id": current["commit_id"],
        "registry_hash": current["registry_hash"],
        "materialized_to": current["materialized_to"],
    }


# Skew: the online store against the offline one ------------------------------------------
def online_skew(
    spec: ProjectSpec, keys: list, online: dict[str, list], settings: Settings
) -> dict[str, float]:
    """Per store feature, the share of the keys whose online value differs from what the
    offline store (the published commit's view tables) gives as of now within the TTL: a
    materialization that failed, lags or went wrong shows here. Both missing is equal."""
    import numpy as np

    offline = offline_latest(spec, keys, settings)
    skew = {}
    for name in spec.store_features:
        want = np.array([np.nan if v is None else v for v in offline[name]], dtype="float64")
        got = np.array([np.nan if v is None else v for v in online[name]], dtype="float64")
        same = np.isclose(got, want, rtol=1e-9, atol=1e-9, equal_nan=True)
        skew[name] = round(float(1 - same.mean()), 4) if len(same) else 0.0
    return skew


def offline_latest(spec: ProjectSpec, keys: list, settings: Settings) -> dict[str, list]:
    """Each store feature's latest value per key as of now, within its view's TTL, from the
    published commit's view tables (None where there is none)."""
    import pandas as pd

    current = published(spec.name, settings)
    if current is None:
        raise FeatureTablesMissing(f"no feature views of {spec.name!r} were published")
    now = pd.Timestamp.now(tz="UTC")
    out: dict[str, list] = {}
    for name in _store(spec).model:
        view = _store(spec).views[name]
        table = pd.read_parquet(Path(current["path"]) / repo.view_file(name))
        ttl = pd.Timedelta(days=view.ttl_days)
        valid = table[(table[EVENT_TIMESTAMP] <= now) & (table[EVENT_TIMESTAMP] > now - ttl)]
        latest = valid.sort_values(EVENT_TIMESTAMP).groupby(join_key(spec, name)).last()
        wanted = latest.reindex(pd.Index(keys, dtype=object))
        for feature in view.features:
            column = wanted[feature].astype(object)
            values = column.where(column.notna(), None).tolist()
            out[f"{name}{STORE_FEATURE_SEPARATOR}{feature}"] = values
    return out
