"""Datasets at a lakeFS commit: read them, check they can train a model, split them.

One room for "the holdout of a commit": training, the promotion gate and the deploy smoke
test all take it from :func:`holdout`, so every model is judged on the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from mlops_lib import layout
from mlops_lib import versioning as vc
from mlops_lib.layout import REQUEST_ID
from mlops_lib.settings import Settings, get_settings
from mlops_lib.spec import ProjectSpec

if TYPE_CHECKING:
    import pandas as pd


class TrainingError(RuntimeError):
    """The data at a commit cannot train a model; the message names the cause."""


def read_dataset(project: str, ref: str = layout.MAIN, settings: Settings | None = None):
    """Every accepted partition of a project's dataset at a ref, as one frame."""
    settings = settings or get_settings()
    prefix = layout.dataset_prefix(project) + "/"
    paths = [p for p in vc.list_paths(project, ref, prefix, settings) if layout.is_data_file(p)]
    return vc.read_parquet(project, ref, paths, settings)


def check_trainable(df: pd.DataFrame, spec: ProjectSpec, commit: str) -> None:
    """Raise TrainingError when the data cannot train a model."""
    target = spec.target.column
    where = f"lakeFS {layout.repo_name(spec.name)}@{commit[:12]}"
    if df.empty:
        raise TrainingError(f"no accepted data at {where}")
    if target not in df.columns:
        raise TrainingError(f"target column {target!r} is missing at {where}")
    missing = [c for c in spec.features if c not in df.columns]
    if missing:
        raise TrainingError(f"feature columns {missing} are missing at {where}")
    labelled = int(df[target].notna().sum())
    if labelled < spec.training.min_rows:
        raise TrainingError(
            f"{labelled} labelled rows at {where}, fewer than training.min_rows="
            f"{spec.training.min_rows}"
        )
    if spec.target.task == "classification":
        _check_classes(df[target].dropna(), spec, where)


def min_class_rows(spec: ProjectSpec) -> int:
    """Labelled rows a class needs to train: one per cross-validation fold, one held out."""
    return spec.training.cv_folds + 1


def short_classes(counts: pd.Series, spec: ProjectSpec) -> dict[str, int]:
    """Classes (label -> rows) with fewer rows than :func:`min_class_rows`."""
    need = min_class_rows(spec)
    return {str(k): int(v) for k, v in counts.items() if int(v) < need}


def _check_classes(y: pd.Series, spec: ProjectSpec, where: str) -> None:
    """Two classes at least, each with enough rows to be cross-validated and held out."""
    counts = y.value_counts()
    if len(counts) < 2:
        raise TrainingError(
            f"target {spec.target.column!r} has a single class {counts.index.tolist()} at {where}"
        )
    need = min_class_rows(spec)
    few = short_classes(counts, spec)
    if few:
        raise TrainingError(
            f"classes with too few labelled rows at {where}: {few} (rows per class); each "
            f"class needs at least {need} (training.cv_folds={spec.training.cv_folds} for "
            f"cross-validation and one for the holdout): add rows, merge or drop these "
            f"classes, or lower training.cv_folds"
        )


def trainable(spec: ProjectSpec, commit: str, settings: Settings | None = None) -> pd.DataFrame:
    """The data at exactly this commit, checked to be able to train a model; with the
    model's store features joined point-in-time from the same commit's feature views."""
    settings = settings or get_settings()
    df = read_dataset(spec.name, commit, settings)
    check_trainable(df, spec, commit)
    if spec.store_features:
        from mlops_lib.feature_store.store import FeatureTablesMissing, training_set  # Feast run

        try:
            df = training_set(df, spec, commit, settings)
        except FeatureTablesMissing as exc:
            raise TrainingError(str(exc)) from exc
    return df


def split(df: pd.DataFrame, spec: ProjectSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/holdout split, fixed for given data: by time when the spec has an event time,
    else stratified (classification) or random, seeded."""
    import pandas as pd  # heavy: kept out of CLI start-up
    from sklearn.model_selection import train_test_split  # heavy: kept out of CLI start-up

    df = df[df[spec.target.column].notna()]
    order = [c for c in (spec.schema.event_time, spec.schema.key) if c]
    if order:
        df = df.sort_values(order, kind="mergesort").reset_index(drop=True)
    frac = spec.training.holdout_fraction
    if spec.schema.event_time:
        # Production rows folded in by continuous training are split on their own: the
        # newest of them are held out, the others are trained on, whatever their times
        # against the batches' (served times may all be newer than every batch).
        parts = [df]
        if REQUEST_ID in df.columns and df[REQUEST_ID].notna().any():
            parts = [df[df[REQUEST_ID].isna()], df[df[REQUEST_ID].notna()]]
        cuts = [round(len(part) * (1 - frac)) for part in parts]
        train = pd.concat([part.iloc[:cut] for part, cut in zip(parts, cuts, strict=True)])
        holdout = pd.concat([part.iloc[cut:] for part, cut in zip(parts, cuts, strict=True)])
    else:
        stratify = df[spec.target.column] if spec.target.task == "classification" else None
        if stratify is not None and _too_small_to_stratify(len(df), stratify.nunique(), frac):
            stratify = None  # every class is kept below, by moving rows
        train, holdout = train_test_split(
            df, test_size=frac, random_state=spec.training.seed, stratify=stratify
        )
    dropped = train.iloc[:0]
    cap = spec.training.max_train_rows
    if cap and len(train) > cap:
        train, dropped = train.iloc[-cap:], train.iloc[:-cap]
    if spec.target.task == "classification":
        train, holdout = _keep_every_class(train, holdout, dropped, spec)
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


def _too_small_to_stratify(rows: int, classes: int, frac: float) -> bool:
    held = round(rows * frac)
    return held < classes or rows - held < classes


def _keep_every_class(
    train: pd.DataFrame, holdout: pd.DataFrame, dropped: pd.DataFrame, spec: ProjectSpec
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Move the fewest rows so that every class has ``cv_folds`` training rows (its newest
    rows cut by ``max_train_rows``, else the holdout's oldest) and one holdout row (the
    newest training row) where its rows allow; rows keep their order."""
    import pandas as pd  # heavy: kept out of CLI start-up

    y, need = spec.target.column, spec.training.cv_folds
    total = pd.concat([train, holdout, dropped])[y].value_counts()
    for label, count in total.items():
        short = min(need, int(count) - 1) - int((train[y] == label).sum())
        if short > 0:
            spare = pd.concat(
                [dropped[dropped[y] == label].iloc[::-1], holdout[holdout[y] == label]]
            )
            moved = spare.iloc[:short]
            train = pd.concat([train, moved]).sort_index()
            holdout = holdout.drop(moved.index.intersection(holdout.index))
        if not (holdout[y] == label).any() and int((train[y] == label).sum()) > need:
            moved = train[train[y] == label].iloc[-1:]
            holdout = pd.concat([holdout, moved]).sort_index()
            train = train.drop(moved.index)
    return train, holdout


@dataclass(frozen=True)
class Holdout:
    """The holdout rows of a commit; the model inputs and labels are made on first use (the
    smoke test needs only raw rows)."""

    spec: ProjectSpec
    rows: pd.DataFrame

    @cached_property
    def X(self) -> pd.DataFrame:
        from mlops_lib.features import model_input  # imports scikit-learn

        return model_input(self.rows, self.spec)

    @cached_property
    def y(self) -> pd.Series:
        from mlops_lib.features import model_target  # imports scikit-learn

        return model_target(self.rows, self.spec)


def holdout(spec: ProjectSpec, commit: str, settings: Settings | None = None) -> Holdout:
    """The holdout of a commit, as every model trained on it is evaluated."""
    _, rows = split(trainable(spec, commit, settings), spec)
    return Holdout(spec, rows)
