"""Use-case assessment: is a project's ML use case feasible on the data at hand?

The discovery step of CRISP-ML, run on a spec before any DAG: data understanding (a profile
of the spec's columns, the target's balance, leakage suspects) and a feasibility study (a
dummy baseline against a default model, both cross-validated on the spec's metric, and the
default model's learning curve), ending in a verdict with its reasons (:func:`verdict`, a
pure function of those results).

:func:`assess` writes ``assessment.json`` and ``assessment.html`` and, when MLflow answers,
logs them with the scores as a run of the experiment ``<project>-assessment``. At most
:data:`MAX_ROWS` rows (a seeded sample) are assessed, with one thread per model fit.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlops_lib.automl import make_estimator
from mlops_lib.datasets import short_classes
from mlops_lib.features import build_pipeline, column_groups, model_input
from mlops_lib.metrics import LOWER_IS_BETTER, cv_scorer, metric_value
from mlops_lib.quality import coerce
from mlops_lib.settings import Settings, get_settings
from mlops_lib.sources import read_file, read_source, resolve_paths
from mlops_lib.spec import ProjectSpec, project_spec
from mlops_lib.tracking import connect as connect_mlflow

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

MAX_ROWS = 20_000  # rows assessed at most (a seeded sample of larger data)
MIN_ROWS = 50  # labelled rows below which nothing can be learnt and evaluated
RARE_FRACTION = 0.05  # classes below this share of the rows are rare
LEAK_SCORE = 0.98  # a single feature this good at the target is a leakage suspect
CURVE_FRACTIONS = (0.1, 0.25, 0.5, 1.0)  # learning curve: shares of each training fold
MIN_CLASS_ROWS = 5  # rows of every class a learning-curve training subset needs
MIN_CURVE_ROWS = 50  # rows a learning-curve training subset needs
MIN_LIFT = 0.05  # share of the way from the dummy to a perfect score: below, not feasible
GOOD_LIFT = 0.2  # below this, the gain is small (weak)
STEEP_RISE = 0.05  # lift gained over the learning curve's last step: still rising (weak)
TOP_VALUES = 5
MAX_ONEHOT_VALUES = 200  # more values in a category: the default model encodes it ordinally
DEFAULT_FAMILY = "hist_gradient_boosting"
DEFAULT_PARAMS: dict[str, Any] = {"max_iter": 50}  # small: a default, not a search
EXPERIMENT_SUFFIX = "-assessment"

Label = Literal["feasible", "weak", "not feasible"]


class AssessmentError(ValueError):
    """The data cannot be assessed; the message names the cause."""


# Results -------------------------------------------------------------------------------
@dataclass
class TopValue:
    value: str
    count: int


@dataclass
class ColumnProfile:
    """One declared column: its role, missing values, distinct values and summary."""

    name: str
    type: str
    role: str  # feature, target, key or event_time
    null_fraction: float
    distinct: int
    min: float | str | None = None  # numbers; datetimes as ISO text
    max: float | str | None = None
    mean: float | None = None  # numbers; the share of true values of a bool
    top: list[TopValue] = field(default_factory=list)  # categories and bools
    flags: list[str] = field(default_factory=list)  # "constant", "all null"


@dataclass
class DataProfile:
    source: str
    source_rows: int
    rows: int  # assessed (a seeded sample when the source has more than MAX_ROWS)
    columns: int
    profiles: list[ColumnProfile]
    constant: list[str]
    all_null: list[str]
    ignored_columns: list[str]  # in the data but not in the spec


@dataclass
class ClassCount:
    label: str
    count: int
    fraction: float


@dataclass
class Distribution:
    mean: float
    std: float
    min: float
    p25: float
    median: float
    p75: float
    max: float


@dataclass
class TargetBalance:
    """Class counts (classification) or the distribution (regression) of the labels."""

    task: str
    labelled_rows: int
    missing: int
    classes: list[ClassCount] = field(default_factory=list)
    rare: list[str] = field(default_factory=list)  # below RARE_FRACTION
    too_few: list[str] = field(default_factory=list)  # fewer rows than training needs
    distribution: Distribution | None = None


@dataclass
class LeakageSuspect:
    column: str
    kind: Literal["predicts the target", "id-like"]
    score: float  # single-feature balanced accuracy, |correlation|, or distinct share
    reason: str


@dataclass
class CvScore:
    mean: float
    std: float


@dataclass
class CurvePoint:
    fraction: float
    rows: int  # training rows per fold
    score: float
    std: float


@dataclass
class Baseline:
    """The dummy baseline and the default model, cross-validated on the spec's metric."""

    metric: str
    lower_is_better: bool
    folds: int
    rows: int
    dummy: CvScore
    model: CvScore
    curve: list[CurvePoint]
    skipped_fractions: list[float]
    encoding: str  # of the default model's categories (see default_model_spec)


@dataclass
class Verdict:
    label: Label
    reasons: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass
class Assessment:
    project: str
    created_at: str
    task: str
    metric: str
    profile: DataProfile
    target: TargetBalance
    leakage: list[LeakageSuspect]
    baseline: Baseline | None  # None when the rows cannot be cross-validated
    verdict: Verdict
    seconds: float


@dataclass
class AssessmentRun:
    """What :func:`assess` did: the assessment, its files and its MLflow run."""

    assessment: Assessment
    json_path: Path
    html_path: Path
    mlflow_run_id: str | None
    mlflow_note: str  # why the run was not logged ("" when it was)


@dataclass
class Evaluation:
    """The labelled rows as the model sees them, with seeded cross-validation folds."""

    rows: pd.DataFrame
    X: pd.DataFrame
    y: np.ndarray
    splits: list[tuple[np.ndarray, np.ndarray]]


# The entry point -----------------------------------------------------------------------
def assess(
    name: str,
    *,
    data: str | None = None,
    out: Path | None = None,
    settings: Settings | None = None,
) -> AssessmentRun:
    """Assess project ``name`` on ``data`` (else its spec's source); write the JSON and HTML
    files to ``out`` (default :func:`default_folder`) and log an MLflow run when it can."""
    settings = settings or get_settings()
    spec = project_spec(name, settings)
    df, source, source_rows = load_data(spec, data, settings)
    assessment = assess_frame(spec, df, source=source, source_rows=source_rows)
    json_path, html_path = write_files(assessment, out or default_folder(name, settings))
    run_id, note = log_to_mlflow(assessment, [json_path, html_path], settings)
    return AssessmentRun(assessment, json_path, html_path, run_id, note)


def default_folder(name: str, settings: Settings) -> Path:
    """Where a project's assessment files go by default."""
    return settings.stack_dir / "assessments" / name


def load_data(
    spec: ProjectSpec, data: str | None, settings: Settings
) -> tuple[pd.DataFrame, str, int]:
    """The rows to assess, where they came from and how many the source has.

    ``data`` (a CSV or Parquet file, folder or glob, relative to the working directory) is
    read as given; the spec's source only from the data roots, as ingestion reads it. At most
    :data:`MAX_ROWS` rows are kept (seeded sample), cast to the spec's types.
    """
    if data is None:
        df, origin = read_source(
            spec, base_dir=settings.repo_root, roots=settings.allowed_data_roots, settings=settings
        )
    else:
        df, origin = _read_files(data)
    needed = [spec.target.column, *spec.features]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise AssessmentError(f"{origin}: the spec's columns {missing} are not in the data")
    if df.empty:
        raise AssessmentError(f"{origin}: no rows")
    source_rows = len(df)
    if source_rows > MAX_ROWS:
        df = df.sample(n=MAX_ROWS, random_state=spec.training.seed).sort_index()
    return _cast(df.reset_index(drop=True), spec, origin), origin, source_rows


def _cast(df: pd.DataFrame, spec: ProjectSpec, origin: str) -> pd.DataFrame:
    """The rows cast to the declared types, or AssessmentError naming the first column that
    does not hold its type."""
    for name, column in spec.schema.columns.items():
        if name not in df.columns:
            continue
        try:
            coerce(df[[name]], spec)
        except (ValueError, TypeError) as exc:
            raise AssessmentError(
                f"{origin}: column {name!r} does not hold its declared type {column.type} "
                f"({type(exc).__name__}: {exc})"
            ) from exc
    out = coerce(df, spec)
    for name, column in spec.schema.columns.items():
        if column.type == "datetime" and name in df.columns:
            unread = df[name][df[name].notna() & out[name].isna()]
            if len(unread):
                raise AssessmentError(
                    f"{origin}: column {name!r}: {len(unread)} values are not dates written "
                    f"as {column.format or 'ISO 8601'}, e.g. {unread.head(3).tolist()}"
                )
    return out


def _read_files(pattern: str) -> tuple[pd.DataFrame, str]:
    import pandas as pd

    files = resolve_paths(pattern, Path.cwd())
    frames = [read_file(p) for p in files]
    df = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return df, ",".join(str(p) for p in files)


def assess_frame(
    spec: ProjectSpec, df: pd.DataFrame, *, source: str = "(in memory)", source_rows: int = 0
) -> Assessment:
    """The assessment of rows already cast to the spec's types (no files, no MLflow)."""
    started = time.monotonic()
    profile = profile_data(df, spec, source=source, source_rows=source_rows or len(df))
    balance = target_balance(df, spec)
    ev = evaluation_set(df, spec)
    leakage = id_like_features(df, spec) + (predictive_features(ev, spec) if ev else [])
    scores = baseline(ev, spec) if ev else None
    sampled = profile.rows < profile.source_rows
    result = verdict(balance, scores, leakage, min_rows=0 if sampled else spec.training.min_rows)
    return Assessment(
        project=spec.name,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        task=spec.target.task,
        metric=spec.training.metric,
        profile=profile,
        target=balance,
        leakage=leakage,
        baseline=scores,
        verdict=result,
        seconds=round(time.monotonic() - started, 2),
    )


# Data understanding --------------------------------------------------------------------
def _role(spec: ProjectSpec, name: str) -> str:
    if name == spec.target.column:
        return "target"
    if name == spec.schema.key:
        return "key"
    return "event_time" if name == spec.schema.event_time else "feature"


def profile_data(
    df: pd.DataFrame, spec: ProjectSpec, *, source: str = "", source_rows: int = 0
) -> DataProfile:
    """Rows, columns and a profile of each declared column; constant and empty ones named."""
    declared = [c for c in spec.schema.columns if c in df.columns]
    profiles = [
        column_profile(df[c], c, spec.schema.columns[c].type, _role(spec, c)) for c in declared
    ]
    return DataProfile(
        source=source,
        source_rows=source_rows or len(df),
        rows=len(df),
        columns=len(declared),
        profiles=profiles,
        constant=[p.name for p in profiles if "constant" in p.flags],
        all_null=[p.name for p in profiles if "all null" in p.flags],
        ignored_columns=[str(c) for c in df.columns if c not in spec.schema.columns],
    )


def column_profile(values: pd.Series, name: str, kind: str, role: str) -> ColumnProfile:
    """Missing share, distinct count, min/max/mean of numbers, top values of categories."""
    present = values.dropna()
    out = ColumnProfile(
        name=name,
        type=kind,
        role=role,
        null_fraction=round(1 - len(present) / len(values), 6) if len(values) else 1.0,
        distinct=int(present.nunique()),
    )
    if present.empty:
        out.flags.append("all null")
        return out
    if out.distinct == 1:
        out.flags.append("constant")
    if kind in ("int", "float", "bool"):
        numbers = present.astype("float64")
        out.mean = round(float(numbers.mean()), 6)
        if kind != "bool":
            out.min, out.max = float(numbers.min()), float(numbers.max())
    elif kind == "datetime":
        out.min, out.max = present.min().isoformat(), present.max().isoformat()
    if kind in ("string", "category", "bool"):
        counts = present.astype(str).value_counts().head(TOP_VALUES)
        out.top = [TopValue(str(v), int(n)) for v, n in counts.items()]
    return out


def target_balance(df: pd.DataFrame, spec: ProjectSpec) -> TargetBalance:
    """Class counts and shares, rare classes and classes too small for the folds; or the
    target's distribution (regression)."""
    labels = df[spec.target.column].dropna()
    out = TargetBalance(
        task=spec.target.task, labelled_rows=len(labels), missing=len(df) - len(labels)
    )
    if labels.empty:
        return out
    if spec.target.task == "regression":
        numbers = labels.astype("float64")
        q = numbers.quantile([0.25, 0.5, 0.75]).tolist()
        out.distribution = Distribution(
            mean=float(numbers.mean()),
            std=float(numbers.std(ddof=0)),
            min=float(numbers.min()),
            p25=q[0],
            median=q[1],
            p75=q[2],
            max=float(numbers.max()),
        )
        return out
    for label, count in labels.astype(str).value_counts().items():
        out.classes.append(ClassCount(str(label), int(count), round(count / len(labels), 6)))
    out.rare = [c.label for c in out.classes if c.fraction < RARE_FRACTION]
    out.too_few = list(short_classes(labels.astype(str).value_counts(), spec))
    return out


def evaluation_set(df: pd.DataFrame, spec: ProjectSpec) -> Evaluation | None:
    """The labelled rows with seeded folds: stratified for classification, at most as many
    as the smallest class has rows (classes of a single row left out). None when they cannot
    be cross-validated: fewer than :data:`MIN_ROWS` rows, or fewer than two classes."""
    import numpy as np
    from sklearn.model_selection import KFold, StratifiedKFold

    t, target = spec.training, spec.target.column
    rows = df[df[target].notna()]
    folds = t.cv_folds
    if spec.target.task == "classification":
        counts = rows[target].value_counts()
        rows = rows[rows[target].isin(counts[counts >= 2].index)]
        if (counts >= 2).sum() < 2:
            return None
        folds = min(folds, int(counts[counts >= 2].min()))
    if len(rows) < MIN_ROWS:
        return None
    rows = rows.reset_index(drop=True)
    y = np.asarray(rows[target].tolist())
    kind = StratifiedKFold if spec.target.task == "classification" else KFold
    splits = list(kind(n_splits=folds, shuffle=True, random_state=t.seed).split(rows, y))
    return Evaluation(rows=rows, X=model_input(rows, spec), y=y, splits=splits)


# Leakage suspects ----------------------------------------------------------------------
def id_like_features(df: pd.DataFrame, spec: ProjectSpec) -> list[LeakageSuspect]:
    """Integer, string or category features unique per row: identifiers a model memorises."""
    out = []
    for name in spec.features:
        if spec.schema.columns[name].type not in ("int", "string", "category"):
            continue
        present = df[name].dropna()
        if len(present) >= MIN_ROWS and present.nunique() == len(present):
            out.append(
                LeakageSuspect(
                    column=name,
                    kind="id-like",
                    score=1.0,
                    reason="unique per row: an identifier the model can memorise (declare it "
                    "as schema.key to keep it out of the features)",
                )
            )
    return out


def predictive_features(ev: Evaluation, spec: ProjectSpec) -> list[LeakageSuspect]:
    """Features that alone almost give the target away: a cross-validated balanced accuracy
    of at least :data:`LEAK_SCORE` (classification) or an absolute correlation of at least
    that much (regression, numeric features)."""
    out = []
    for name in spec.features:
        kind = spec.schema.columns[name].type
        numeric = kind in ("int", "float", "bool", "datetime")
        if spec.target.task == "classification":
            score = _single_feature_accuracy(ev.rows[name], numeric, ev, spec.training.seed)
            what = f"alone predicts the target with a balanced accuracy of {score:.3f}"
        elif numeric:
            score = abs(_correlation(_as_numbers(ev.rows[name]), ev.y.astype(float)))
            what = f"correlates with the target at |r| = {score:.3f}"
        else:
            continue
        if score >= LEAK_SCORE:
            out.append(LeakageSuspect(name, "predicts the target", round(score, 6), what))
    return out


def _as_numbers(values: pd.Series) -> np.ndarray:
    """A numeric, bool or datetime column as floats (NaN where missing)."""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(values):
        values = (values - pd.Timestamp(0, tz=values.dt.tz)).dt.total_seconds()
    return values.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    import numpy as np

    keep = ~np.isnan(x)
    if keep.sum() < 3 or np.std(x[keep]) == 0 or np.std(y[keep]) == 0:
        return 0.0
    return float(np.corrcoef(x[keep], y[keep])[0, 1])


def _single_feature_accuracy(values: pd.Series, numeric: bool, ev: Evaluation, seed: int) -> float:
    """Out-of-fold balanced accuracy of one feature alone: a small tree on a number, the
    majority class of each value (learnt on the training folds) on a category."""
    import numpy as np

    y = ev.y.astype(object)
    pred = np.empty(len(y), dtype=object)
    x = _as_numbers(values).reshape(-1, 1) if numeric else values.astype(object)
    for train, test in ev.splits:
        if numeric:
            pred[test] = _tree_predict(x, ev.y, train, test, seed)
        else:
            pred[test] = _lookup_predict(x, y, train, test)
    return metric_value("balanced_accuracy", y, pred=pred, classes=list(np.unique(ev.y)))


def _tree_predict(x: Any, y: Any, train: Any, test: Any, seed: int) -> Any:
    from sklearn.tree import DecisionTreeClassifier

    tree = DecisionTreeClassifier(max_depth=6, min_samples_leaf=5, random_state=seed)
    return tree.fit(x[train], y[train]).predict(x[test])


def _lookup_predict(x: pd.Series, y: Any, train: Any, test: Any) -> Any:
    import pandas as pd

    keys = x.where(x.notna(), "\x00missing")
    pairs = pd.DataFrame({"key": keys.iloc[train].to_numpy(), "y": y[train]})
    top = pairs.value_counts(["key", "y"]).reset_index().drop_duplicates("key")
    majority = pd.Series(y[train]).mode().iloc[0]
    return keys.iloc[test].map(dict(zip(top["key"], top["y"], strict=True))).fillna(majority)


# Feasibility: baseline, default model, learning curve ----------------------------------
def _score(spec: ProjectSpec, model: Any, X: pd.DataFrame, y: np.ndarray) -> float:
    """The spec's metric of a fitted model on rows (raw value, larger or smaller is better as
    :data:`LOWER_IS_BETTER` says): the one place the assessment takes a metric's meaning from
    :mod:`mlops_lib.metrics`."""
    return float(cv_scorer(spec)(model, X, y))


def baseline(ev: Evaluation, spec: ProjectSpec) -> Baseline:
    """A dummy baseline and the default model on the same folds, and the learning curve."""
    from sklearn.dummy import DummyClassifier, DummyRegressor

    task, metric = spec.target.task, spec.training.metric
    dummy = DummyClassifier(strategy="prior") if task == "classification" else DummyRegressor()
    model_spec = default_model_spec(ev, spec)
    model = build_pipeline(
        model_spec, make_estimator(DEFAULT_FAMILY, DEFAULT_PARAMS, task, spec.training.seed)
    )
    try:
        dummy_score = cross_validated(dummy, ev, spec)
        curve, skipped = learning_curve(model, ev, spec)
    except (ValueError, TypeError) as exc:
        raise AssessmentError(
            f"the default model cannot be cross-validated on this data: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from exc
    full = curve[-1]
    return Baseline(
        metric=metric,
        lower_is_better=metric in LOWER_IS_BETTER,
        folds=len(ev.splits),
        rows=len(ev.y),
        dummy=dummy_score,
        model=CvScore(full.score, full.std),
        curve=curve,
        skipped_fractions=skipped,
        encoding=model_spec.training.encoding,
    )


def default_model_spec(ev: Evaluation, spec: ProjectSpec) -> ProjectSpec:
    """The spec the default model is built from: the project's, with ordinal encoding when
    one-hot encoding would give a category of more than :data:`MAX_ONEHOT_VALUES` values (an
    identifier, say) a column per value."""
    if spec.training.encoding != "onehot":
        return spec
    _, categorical = column_groups(spec)
    if all(ev.X[c].nunique() <= MAX_ONEHOT_VALUES for c in categorical):
        return spec
    training = spec.training.model_copy(update={"encoding": "ordinal"})
    return spec.model_copy(update={"training": training})


def cross_validated(
    estimator: Any, ev: Evaluation, spec: ProjectSpec, fraction: float = 1.0
) -> CvScore:
    """Mean and spread of the metric over the folds, each trained on ``fraction`` of its
    training rows (a seeded, stratified subset for classification)."""
    import numpy as np
    from sklearn.base import clone

    scores = []
    for i, (train, test) in enumerate(ev.splits):
        if fraction < 1:
            train = _subset(train, ev.y, fraction, spec, seed=spec.training.seed + i)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            fitted = clone(estimator).fit(ev.X.iloc[train], ev.y[train])
            scores.append(_score(spec, fitted, ev.X.iloc[test], ev.y[test]))
    if np.isnan(scores).all():
        return CvScore(float("nan"), float("nan"))
    return CvScore(round(float(np.nanmean(scores)), 6), round(float(np.nanstd(scores)), 6))


def _subset(train: Any, y: Any, fraction: float, spec: ProjectSpec, seed: int) -> Any:
    import numpy as np
    from sklearn.model_selection import train_test_split

    stratify = y[train] if spec.target.task == "classification" else None
    size = int(len(train) * fraction)
    kept, _ = train_test_split(train, train_size=size, random_state=seed, stratify=stratify)
    return np.sort(kept)


def learning_curve(
    model: Any, ev: Evaluation, spec: ProjectSpec
) -> tuple[list[CurvePoint], list[float]]:
    """The model's score at each of :data:`CURVE_FRACTIONS` of the training folds (the last,
    1.0, is its cross-validated score), and the fractions skipped for leaving too few rows
    (or too few of a class) to train on."""
    import numpy as np

    train_rows = min(len(train) for train, _ in ev.splits)
    smallest = train_rows
    if spec.target.task == "classification":
        smallest = min(int(np.unique(ev.y[tr], return_counts=True)[1].min()) for tr, _ in ev.splits)
    points, skipped = [], []
    for fraction in CURVE_FRACTIONS:
        rows = int(train_rows * fraction)
        too_few = rows < MIN_CURVE_ROWS or smallest * fraction < MIN_CLASS_ROWS
        if fraction < 1 and too_few:
            skipped.append(fraction)
            continue
        score = cross_validated(model, ev, spec, fraction)
        points.append(CurvePoint(fraction, rows, score.mean, score.std))
    return points, skipped


# The verdict ---------------------------------------------------------------------------
def lift(metric: str, dummy: float, score: float) -> float:
    """How far ``score`` goes from the dummy's towards a perfect score (0 for lower-is-better
    metrics, else 1): 0 is no gain, 1 perfect, negative worse than the dummy."""
    perfect = 0.0 if metric in LOWER_IS_BETTER else 1.0
    room = perfect - dummy
    return 0.0 if room == 0 else (score - dummy) / room


def verdict(
    balance: TargetBalance,
    scores: Baseline | None,
    leakage: list[LeakageSuspect],
    *,
    min_rows: int = 0,
) -> Verdict:
    """The verdict and its reasons: "not feasible" when the data cannot be learnt from or the
    default model does not beat the dummy by a margin; "weak" when the gain is small, the
    learning curve still rises steeply or features are leakage suspects; else "feasible".
    ``min_rows`` (the spec's ``training.min_rows``; 0 to skip) only adds a note."""
    notes = _notes(balance, min_rows)
    blocking = _not_feasible(balance, scores)
    if blocking:
        if leakage:
            notes.append(_leakage_reason(leakage))
        return Verdict("not feasible", blocking, notes)
    assert scores is not None
    weak = _weaknesses(scores, leakage)
    if weak:
        return Verdict("weak", weak, notes)
    m, d = scores.model, scores.dummy
    strong = (
        f"the default model beats the dummy baseline clearly ({scores.metric} {m.mean:.4f} "
        f"± {m.std:.4f} against {d.mean:.4f}) and its learning curve has flattened"
    )
    return Verdict("feasible", [strong], notes)


def _not_feasible(balance: TargetBalance, scores: Baseline | None) -> list[str]:
    reasons = []
    if balance.labelled_rows < MIN_ROWS:
        reasons.append(
            f"only {balance.labelled_rows} labelled rows: too few to learn from and to evaluate "
            f"(at least {MIN_ROWS})"
        )
    if balance.task == "classification" and sum(c.count >= 2 for c in balance.classes) < 2:
        reasons.append("the target has fewer than two classes of two rows or more")
    if balance.distribution is not None and balance.distribution.std == 0:
        reasons.append("the target is constant: there is nothing to predict")
    if balance.too_few:
        reasons.append(
            f"classes {balance.too_few} have fewer labelled rows than training needs (one per "
            f"cross-validation fold and one for the holdout): the train DAG would refuse this "
            f"data; add rows, merge or drop these classes, or lower training.cv_folds"
        )
    if reasons or scores is None:
        return reasons or ["the labelled rows cannot be cross-validated"]
    m, d, metric = scores.model, scores.dummy, scores.metric
    if not (math.isfinite(m.mean) and math.isfinite(d.mean)):
        return [f"{metric} could not be computed on the folds"]
    gain = lift(metric, d.mean, m.mean)
    against = f"({metric} {m.mean:.4f} ± {m.std:.4f} against the dummy's {d.mean:.4f})"
    if gain < MIN_LIFT:
        reasons.append(
            f"the default model does not beat the dummy baseline by a margin {against}: "
            f"the features carry little signal about the target"
        )
    elif abs(m.mean - d.mean) <= m.std:
        reasons.append(
            f"the default model's gain over the dummy baseline is within its spread across "
            f"folds {against}: it cannot be told apart from guessing"
        )
    return reasons


def _weaknesses(scores: Baseline, leakage: list[LeakageSuspect]) -> list[str]:
    reasons = []
    m, d, metric = scores.model, scores.dummy, scores.metric
    gain = lift(metric, d.mean, m.mean)
    if gain < GOOD_LIFT:
        reasons.append(
            f"the default model gains little over the dummy baseline ({metric} {m.mean:.4f} "
            f"against {d.mean:.4f}: {gain:.0%} of the way to a perfect score)"
        )
    if len(scores.curve) >= 2:
        before, last = scores.curve[-2], scores.curve[-1]
        rise = lift(metric, d.mean, last.score) - lift(metric, d.mean, before.score)
        if rise >= STEEP_RISE:
            reasons.append(
                f"the learning curve still rises ({metric} {before.score:.4f} on "
                f"{before.fraction:.0%} of the rows, {last.score:.4f} on all): more data "
                f"would help"
            )
    if leakage:
        reasons.append(_leakage_reason(leakage))
    return reasons


def _leakage_reason(leakage: list[LeakageSuspect]) -> str:
    names = ", ".join(sorted({s.column for s in leakage}))
    return f"leakage suspects ({names}): the score may be inflated; check them before trusting it"


def _notes(balance: TargetBalance, min_rows: int) -> list[str]:
    notes = []
    if balance.missing:
        notes.append(f"{balance.missing} rows have no label and were left out")
    if balance.rare:
        notes.append(f"rare classes (under {RARE_FRACTION:.0%} of the rows): {balance.rare}")
    if min_rows and balance.labelled_rows < min_rows:
        notes.append(
            f"{balance.labelled_rows} labelled rows, fewer than training.min_rows={min_rows}: "
            f"the train DAG would refuse this data"
        )
    return notes


# Outputs -------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """JSON-ready: paths as text, NaN and infinities as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def to_json(assessment: Assessment) -> str:
    """The assessment as a JSON document."""
    return json.dumps(_plain(asdict(assessment)), indent=2, default=str)


def run_json(run: AssessmentRun) -> str:
    """The assessment with where it was written and logged (the CLI's ``--json``)."""
    doc = asdict(run.assessment) | {
        "files": {"json": run.json_path, "html": run.html_path},
        "mlflow": {"run_id": run.mlflow_run_id, "note": run.mlflow_note},
    }
    return json.dumps(_plain(doc), indent=2, default=str)


def write_files(assessment: Assessment, folder: Path) -> tuple[Path, Path]:
    """``assessment.json`` and ``assessment.html`` in ``folder`` (made when missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, html_path = folder / "assessment.json", folder / "assessment.html"
    json_path.write_text(to_json(assessment))
    html_path.write_text(render_html(assessment))
    return json_path, html_path


def mlflow_unreachable(settings: Settings) -> str | None:
    """Why the MLflow server cannot take a run (its health check fails), or None."""
    import httpx

    url = settings.mlflow_url
    try:
        response = httpx.get(f"{url}/health", timeout=3.0)
    except httpx.HTTPError as exc:
        return (
            f"MLflow at {url} is not reachable ({type(exc).__name__}); `mlops stack up` starts it"
        )
    if not response.is_success:
        return f"MLflow at {url} answered {response.status_code} to its health check"
    return None


def log_to_mlflow(
    assessment: Assessment, files: list[Path], settings: Settings
) -> tuple[str | None, str]:
    """A run of ``<project>-assessment`` with the sizes, scores, verdict and files: its id
    and "", or None and why it was not logged."""
    problem = mlflow_unreachable(settings)
    if problem:
        return None, problem
    import mlflow  # heavy: imported once the server answers

    try:
        connect_mlflow(settings)
        mlflow.set_experiment(assessment.project + EXPERIMENT_SUFFIX)
        # MLflow prints the run's address when it ends: on stderr, so stdout stays the
        # command's own output (e.g. its --json document).
        with (
            contextlib.redirect_stdout(sys.stderr),
            mlflow.start_run(run_name=f"assess@{assessment.created_at[:16]}") as run,
        ):
            mlflow.log_params(_mlflow_params(assessment))
            mlflow.set_tags({"verdict": assessment.verdict.label})
            _log_scores(assessment.baseline)
            for path in files:
                mlflow.log_artifact(str(path), "assessment")
            return run.info.run_id, ""
    except Exception as exc:  # the files are written; the note says why the run is not
        first = str(exc).splitlines()[0] if str(exc) else ""
        return (
            None,
            f"MLflow at {settings.mlflow_url} refused the run ({type(exc).__name__}: {first})",
        )


def _mlflow_params(assessment: Assessment) -> dict[str, Any]:
    p = assessment.profile
    return {
        "rows": p.rows,
        "source_rows": p.source_rows,
        "columns": p.columns,
        "task": assessment.task,
        "metric": assessment.metric,
        "source": p.source[:500],
        "default_model": DEFAULT_FAMILY,
    }


def _log_scores(scores: Baseline | None) -> None:
    import mlflow  # heavy: kept out of CLI start-up

    if scores is None:
        return
    values = {
        "dummy_cv_score": scores.dummy.mean,
        "dummy_cv_std": scores.dummy.std,
        "model_cv_score": scores.model.mean,
        "model_cv_std": scores.model.std,
        "lift": lift(scores.metric, scores.dummy.mean, scores.model.mean),
    }
    mlflow.log_metrics({k: v for k, v in values.items() if math.isfinite(v)})
    for point in scores.curve:  # step: training rows per fold
        if math.isfinite(point.score):
            mlflow.log_metric("learning_curve", point.score, step=point.rows)


def summary_lines(run: AssessmentRun) -> list[str]:
    """The CLI's short summary: data, scores, curve, verdict, files and the MLflow run."""
    a = run.assessment
    p, t, s = a.profile, a.target, a.baseline
    lines = [
        f"{a.project}: {p.rows} rows (of {p.source_rows}) from {p.source}, {p.columns} columns; "
        f"{a.task}, metric {a.metric}",
        f"target: {_balance_text(t)}",
    ]
    if s is not None:
        lines += [
            f"dummy baseline  {s.metric} {s.dummy.mean:.4f} ± {s.dummy.std:.4f}  "
            f"({s.folds}-fold cross-validation on {s.rows} rows)",
            f"default model   {s.metric} {s.model.mean:.4f} ± {s.model.std:.4f}  "
            f"({DEFAULT_FAMILY}, {s.encoding} encoding)",
            "learning curve  "
            + ", ".join(f"{c.fraction:.0%} {c.score:.4f}" for c in s.curve)
            + (
                f" (skipped {', '.join(f'{f:.0%}' for f in s.skipped_fractions)})"
                if s.skipped_fractions
                else ""
            ),
        ]
    suspects = "; ".join(f"{x.column}: {x.reason}" for x in a.leakage)
    lines.append(f"leakage suspects: {suspects or 'none'}")
    lines.append(f"verdict: {a.verdict.label.upper()}")
    lines += [f"  - {r}" for r in a.verdict.reasons]
    lines += [f"  note: {n}" for n in a.verdict.notes]
    lines.append(f"wrote {run.json_path} and {run.html_path}")
    if run.mlflow_run_id:
        lines.append(f"MLflow run {run.mlflow_run_id} (experiment {a.project}{EXPERIMENT_SUFFIX})")
    else:
        lines.append(f"MLflow run not logged: {run.mlflow_note}")
    return lines


def _balance_text(t: TargetBalance) -> str:
    if t.distribution is not None:
        d = t.distribution
        return (
            f"{t.labelled_rows} labelled rows, mean {d.mean:.4g}, std {d.std:.4g}, "
            f"min {d.min:.4g}, median {d.median:.4g}, max {d.max:.4g}"
        )
    shown = ", ".join(f"{c.label} {c.count} ({c.fraction:.1%})" for c in t.classes[:10])
    more = f" and {len(t.classes) - 10} more" if len(t.classes) > 10 else ""
    return f"{len(t.classes)} classes: {shown}{more}"


# The page ------------------------------------------------------------------------------
def _curve_svg(scores: Baseline) -> str:
    """Inline SVG: the default model's score by share of the rows (orange, each point
    labelled), the dummy's score dashed (blue)."""
    curve = [p for p in scores.curve if math.isfinite(p.score)]
    values = [p.score for p in curve] + [scores.dummy.mean]
    values = [v for v in values if math.isfinite(v)]
    if not curve:
        return ""
    low, high = min(values), max(values)
    w, h = 360, 170

    def xy(fraction: float, v: float) -> tuple[float, float]:
        return 30 + (w - 60) * fraction, 20 + (h - 50) * (high - v) / ((high - low) or 1.0)

    line = " ".join("{:.1f},{:.1f}".format(*xy(p.fraction, p.score)) for p in curve)
    parts = [f'<polyline points="{line}" fill="none" stroke="#d9822b"/>']
    for p in curve:
        x, y = xy(p.fraction, p.score)
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#d9822b"><title>{p.fraction:.0%} '
            f"({p.rows} rows): {p.score:.4f}</title></circle>"
            f'<text x="{x - 14:.1f}" y="{y - 6:.1f}" font-size="10">{p.score:.3f}</text>'
            f'<text x="{x - 8:.1f}" y="{h - 8}" font-size="10">{p.fraction:.0%}</text>'
        )
    if math.isfinite(scores.dummy.mean):
        _, y = xy(0, scores.dummy.mean)
        parts.append(
            f'<line x1="30" x2="{w - 30}" y1="{y:.1f}" y2="{y:.1f}" stroke="#8aa4c8" '
            f'stroke-dasharray="4"/><text x="{w - 28}" y="{y + 3:.1f}" font-size="10">dummy</text>'
        )
    return f'<svg width="{w + 20}" height="{h}">{"".join(parts)}</svg>'


def _profile_row(c: ColumnProfile) -> str:
    def number(v: float | str | None) -> str:
        return "-" if v is None else escape(v if isinstance(v, str) else f"{v:.4g}")

    top = ", ".join(f"{t.value} ({t.count})" for t in c.top)
    return (
        f"<tr><td>{escape(c.name)}</td><td>{escape(c.type)}</td><td>{escape(c.role)}</td>"
        f"<td>{c.null_fraction:.1%}</td><td>{c.distinct}</td><td>{number(c.min)}</td>"
        f"<td>{number(c.max)}</td><td>{number(c.mean)}</td><td>{escape(top)}</td>"
        f"<td class='flag'>{escape(', '.join(c.flags))}</td></tr>"
    )


def _items(lines: list[str]) -> str:
    return "".join(f"<li>{escape(line)}</li>" for line in lines) or "<li>none</li>"


def _scores_section(s: Baseline | None) -> str:
    if s is None:
        return "<p>The labelled rows cannot be cross-validated.</p>"
    direction = "lower" if s.lower_is_better else "higher"
    skipped = ", ".join(f"{f:.0%}" for f in s.skipped_fractions) or "none"
    rows = "".join(
        f"<tr><td>{p.fraction:.0%}</td><td>{p.rows}</td><td>{p.score:.4f}</td>"
        f"<td>{p.std:.4f}</td></tr>"
        for p in s.curve
    )
    return f"""<p>{escape(s.metric)} ({direction} is better), {s.folds}-fold cross-validation
on {s.rows} labelled rows.</p>
<table><tr><th></th><th>{escape(s.metric)}</th><th>std</th></tr>
<tr><td>dummy baseline</td><td>{s.dummy.mean:.4f}</td><td>{s.dummy.std:.4f}</td></tr>
<tr><td>default model ({escape(DEFAULT_FAMILY)}, {escape(s.encoding)} encoding)</td>
<td>{s.model.mean:.4f}</td><td>{s.model.std:.4f}</td></tr></table>
<h3>Learning curve</h3>
<p>The default model trained on a share of each training fold; the dummy dashed. Skipped
shares (too few rows, or of a class, to train on): {escape(skipped)}.</p>
{_curve_svg(s)}
<table><tr><th>share</th><th>training rows</th><th>{escape(s.metric)}</th><th>std</th></tr>
{rows}</table>"""


def render_html(a: Assessment) -> str:
    """A readable page of an assessment: verdict, target, scores, leakage, column profile."""
    p = a.profile
    leakage = [f"{s.column}: {s.reason}" for s in a.leakage]
    columns = "".join(_profile_row(c) for c in p.profiles)
    ignored = ", ".join(p.ignored_columns) or "none"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Assessment: {escape(a.project)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 10px;text-align:left}}
td.flag{{color:#b00}}.verdict{{font-size:1.3em;font-weight:bold}}</style></head><body>
<h1>Use-case assessment: {escape(a.project)}</h1>
<p>{p.rows} rows (of {p.source_rows}) from {escape(p.source)}; {p.columns} columns;
{escape(a.task)}, metric {escape(a.metric)}; assessed {escape(a.created_at)} in
{a.seconds:.1f}s. Columns not in the spec (ignored): {escape(ignored)}.</p>
<p class="verdict">Verdict: {escape(a.verdict.label)}</p>
<ul>{_items(a.verdict.reasons)}</ul>
<h2>Notes</h2><ul>{_items(a.verdict.notes)}</ul>
<h2>Target</h2><p>{escape(_balance_text(a.target))}</p>
<h2>Dummy baseline and default model</h2>{_scores_section(a.baseline)}
<h2>Leakage suspects</h2><ul>{_items(leakage)}</ul>
<h2>Columns</h2>
<table><tr><th>column</th><th>type</th><th>role</th><th>null</th><th>distinct</th><th>min</th>
<th>max</th><th>mean</th><th>top values</th><th>flags</th></tr>{columns}</table>
</body></html>
"""
