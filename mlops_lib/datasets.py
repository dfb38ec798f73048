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
    if spec.target.task == "classification" and df[target].nunique(dropna=True) < 2:
        only = df[target].dropna().unique().tolist()
        raise TrainingError(f"target {target!r} has a single class {only} at {where}")


def trainable(spec: ProjectSpec, commit: str, settings: Settings | None = None) -> pd.DataFrame:
    """The data at exactly this commit, checked to be able to train a model."""
    df = read_dataset(spec.name, commit, settings or get_settings())
    check_trainable(df, spec, commit)
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
        train, holdout = train_test_split(
            df, test_size=frac, random_state=spec.training.seed, stratify=stratify
        )
    cap = spec.training.max_train_rows
    if cap and len(train) > cap:
        train = train.iloc[-cap:]
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


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
        return self.rows[self.spec.target.column]


def holdout(spec: ProjectSpec, commit: str, settings: Settings | None = None) -> Holdout:
    """The holdout of a commit, as every model trained on it is evaluated."""
    _, rows = split(trainable(spec, commit, settings), spec)
    return Holdout(spec, rows)
