"""The runner's commands, each a thin layer over Feast's own API (Feast 0.67).

Each takes the parsed JSON arguments and returns a JSON-ready dict; see :mod:`.runner`.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from feast import FeatureStore
from feast.errors import (
    EntityDFNotDateTime,
    EntityTimestampInferenceException,
    FeastEntityDFMissingColumnsError,
    FeastObjectNotFoundException,
    FeatureNameCollisionError,
    InvalidFeaturesParameterType,
    SpecifiedFeaturesNotPresentError,
)
from feast.feature_view import DUMMY_ENTITY_NAME
from feast.repo_config import load_repo_config
from feast.repo_operations import apply_total
from feast.repo_operations import plan as feast_plan

from mlops_feature_store.errors import UserError

CONFIG_FILE = "feature_store.yaml"
EVENT_TIMESTAMP = "event_timestamp"
# Numbers the entity rows through Feast's join, to put its answer back in their order.
ROW = "__mlops_entity_row"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Feast's exceptions that mean "the caller asked for something that is not there".
_USER_ERRORS = (
    FileNotFoundError,
    FeastObjectNotFoundException,  # entity, feature view, feature service, data source
    FeatureNameCollisionError,
    SpecifiedFeaturesNotPresentError,
    InvalidFeaturesParameterType,
    FeastEntityDFMissingColumnsError,
    EntityTimestampInferenceException,
    EntityDFNotDateTime,
)


def user_error(e: BaseException) -> bool:
    return isinstance(e, _USER_ERRORS)


# --- commands ------------------------------------------------------------------------


def apply_repo(args: dict[str, Any]) -> dict[str, Any]:
    """``feast apply``: register what the repo's files define, drop what they no longer do."""
    repo = _repo(args)
    log = _feast_cli_call(repo, apply_total, skip_source_validation=False)
    store = FeatureStore(repo_path=str(repo))
    return {"log": log, **_registry(store)}


def plan_repo(args: dict[str, Any]) -> dict[str, Any]:
    """``feast plan``: the registry and infrastructure changes ``apply`` would make."""
    repo = _repo(args)
    return {"plan": _feast_cli_call(repo, feast_plan, skip_source_validation=False)}


def list_registry(args: dict[str, Any]) -> dict[str, Any]:
    """The entities and feature views in the registry."""
    return _registry(_store(args))


def materialize(args: dict[str, Any]) -> dict[str, Any]:
    """Offline store -> online store, up to ``end_date`` (from ``start_date`` if given)."""
    store = _store(args)
    end = _datetime(args, "end_date")
    names = args.get("feature_views")
    if names is not None and (
        not isinstance(names, list) or not all(isinstance(n, str) for n in names)
    ):
        raise UserError("feature_views must be a list of feature view names")
    for name in names or []:
        store.get_feature_view(name)  # FeatureViewNotFoundException: a user error
    if args.get("start_date") is not None:
        start = _datetime(args, "start_date")
        store.materialize(start_date=start, end_date=end, feature_views=names)
        mode = "range"
    else:
        store.materialize_incremental(end_date=end, feature_views=names)
        mode = "incremental"
    views = []
    for fv in store.list_feature_views():
        if names is not None and fv.name not in names:
            continue
        intervals = fv.materialization_intervals
        start_done, end_done = intervals[-1] if intervals else (None, None)
        views.append({"name": fv.name, "start": start_done, "end": end_done})
    return {"mode": mode, "end_date": end, "feature_views": views}


def historical(args: dict[str, Any]) -> dict[str, Any]:
    """Point-in-time join of the features onto the entity rows, written to ``output``.

    One output row per entity row, in the entity file's order: a row with no feature value
    at or before its time within the view's TTL gets nulls (see ``_one_row_per_entity_row``).
    """
    store = _store(args)
    entity_path = _path(args, "entity_df")
    if not entity_path.is_file():
        raise UserError(f"entity_df: no such file {entity_path}")
    output = _path(args, "output")
    entity_df = pd.read_parquet(entity_path)
    if EVENT_TIMESTAMP not in entity_df.columns:
        raise UserError(f"entity_df: no {EVENT_TIMESTAMP!r} column in {entity_path}")
    if ROW in entity_df.columns:
        raise UserError(f"entity_df: the column name {ROW!r} is reserved")
    # Naive times are UTC, as Feast takes them; the join back below needs them equal.
    entity_df[EVENT_TIMESTAMP] = pd.to_datetime(entity_df[EVENT_TIMESTAMP], utc=True)
    entity_df[ROW] = range(len(entity_df))
    job = store.get_historical_features(
        entity_df=entity_df,
        features=_features(args, store),
        full_feature_names=bool(args.get("full_feature_names", False)),
    )
    join_keys = sorted({e.join_key for e in store.list_entities()} & set(entity_df.columns))
    df = _one_row_per_entity_row(entity_df, job.to_df(), join_keys)
    output.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(output, index=False)
    return {"output": str(output), "rows": len(df), "columns": [str(c) for c in df.columns]}


def online(args: dict[str, Any]) -> dict[str, Any]:
    """The latest materialized values for each entity row (null where there is none)."""
    store = _store(args)
    rows = args.get("entity_rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and r for r in rows):
        raise UserError("entity_rows must be a list of {join_key: value} objects")
    join_keys = {e.join_key for e in store.list_entities()}
    unknown = sorted({k for r in rows for k in r} - join_keys)
    if unknown:
        # Feast ignores an unknown key next to a known one, and with none known it fails
        # with a KeyError about the missing one.
        raise UserError(f"unknown entity key(s) {unknown}; the registry has {sorted(join_keys)}")
    response = store.get_online_features(
        features=_features(args, store),
        entity_rows=rows,
        full_feature_names=bool(args.get("full_feature_names", False)),
    )
    return {"features": response.to_dict()}


HANDLERS = {
    "apply": apply_repo,
    "plan": plan_repo,
    "list": list_registry,
    "materialize": materialize,
    "historical": historical,
    "online": online,
}


# --- helpers -------------------------------------------------------------------------


def _repo(args: dict[str, Any]) -> Path:
    repo = _path(args, "repo")
    if not (repo / CONFIG_FILE).is_file():
        raise UserError(f"repo: no {CONFIG_FILE} in {repo}")
    return repo


def _store(args: dict[str, Any]) -> FeatureStore:
    return FeatureStore(repo_path=str(_repo(args)))


def _path(args: dict[str, Any], key: str) -> Path:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise UserError(f"{key}: a path is required")
    return Path(value).expanduser().resolve()


def _datetime(args: dict[str, Any], key: str) -> datetime:
    value = args.get(key)
    if not isinstance(value, str):
        raise UserError(f"{key}: an ISO 8601 date or time is required")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"{key}: not an ISO 8601 date or time: {value!r}") from None
    # A naive time is UTC, as Feast takes it.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _features(args: dict[str, Any], store: FeatureStore) -> list[str]:
    """The requested ``"view:feature"`` references, each one known to the registry."""
    features = args.get("features")
    if (
        not isinstance(features, list)
        or not features
        or not all(isinstance(f, str) and ":" in f for f in features)
    ):
        raise UserError('features must be a non-empty list of "feature_view:feature"')
    views = {v.name: {f.name for f in v.features} for v in store.list_all_feature_views()}
    for ref in features:
        view, _, feature = ref.partition(":")
        view = view.partition("@")[0]  # "view@v2:feature" names a version of the view
        if view not in views:
            raise UserError(f"unknown feature view {view!r}; the registry has {sorted(views)}")
        if feature not in views[view]:
            raise UserError(
                f"unknown feature {feature!r} in {view!r}; it has {sorted(views[view])}"
            )
    return features


def _feast_cli_call(repo: Path, operation: Any, **kwargs: Any) -> str:
    """Run a ``feast.repo_operations`` function as the CLI does; return what it printed.

    Like ``feast -c repo``: the repo folder goes on ``sys.path`` (its files import each
    other), the function chdirs into it (restored here) and exits on a bad repo.
    """
    config = load_repo_config(repo, repo / CONFIG_FILE)
    if str(repo) not in sys.path:
        sys.path.append(str(repo))
    cwd = os.getcwd()
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            operation(config, repo, **kwargs)
    except SystemExit:
        raise UserError(_ANSI.sub("", out.getvalue()).strip() or "invalid feature repo") from None
    finally:
        os.chdir(cwd)
    return _ANSI.sub("", out.getvalue())


def _one_row_per_entity_row(
    entity_df: pd.DataFrame, joined: pd.DataFrame, join_keys: list[str]
) -> pd.DataFrame:
    """Feast's answer as one row per entity row, in their order, nulls where it had none.

    The file offline store (Dask) of Feast 0.67 drops an entity row, instead of giving it
    nulls, when the entity has source rows but none within [time - ttl, time]; and it keeps
    one of the entity rows sharing join keys and time (feast-dev/feast#6787). Rows Feast
    kept are matched by their number; a collapsed row takes the values of its twin (same
    keys and time, so the same point-in-time answer); a dropped row gets nulls.
    """
    features = [c for c in joined.columns if c not in entity_df.columns]
    kept = joined.dropna(subset=[ROW]).drop_duplicates(ROW)
    kept = kept.astype({ROW: "int64"}).set_index(ROW)[features]
    out = entity_df.join(kept, on=ROW)
    lost = ~entity_df[ROW].isin(kept.index)
    if lost.any() and features:
        on = [*join_keys, EVENT_TIMESTAMP]
        twins = joined.drop_duplicates(on)[on + features]
        # A left merge keeps the left order, and twins has one row per key: row for row.
        found = entity_df.loc[lost, on].merge(twins, on=on, how="left")
        out.loc[lost, features] = found[features].to_numpy()
    return out.drop(columns=[ROW]).reset_index(drop=True)


def _registry(store: FeatureStore) -> dict[str, Any]:
    entities = [
        {
            "name": e.name,
            "join_key": e.join_key,
            "value_type": e.value_type.name,
            "description": e.description,
        }
        for e in sorted(store.list_entities(), key=lambda e: e.name)
        if e.name != DUMMY_ENTITY_NAME
    ]
    views = [_view(fv) for fv in sorted(store.list_feature_views(), key=lambda v: v.name)]
    return {"project": store.project, "entities": entities, "feature_views": views}


def _view(fv: Any) -> dict[str, Any]:
    source = fv.batch_source
    return {
        "name": fv.name,
        "entities": [e for e in fv.entities if e != DUMMY_ENTITY_NAME],
        "ttl_seconds": fv.ttl.total_seconds() if fv.ttl else None,
        "features": [{"name": f.name, "dtype": str(f.dtype)} for f in fv.features],
        "online": fv.online,
        "source": {
            "name": source.name if source else None,
            "type": type(source).__name__ if source else None,
            "path": getattr(source, "path", None),
            "timestamp_field": source.timestamp_field if source else None,
        },
        "materialization_intervals": [[start, end] for start, end in fv.materialization_intervals],
    }
