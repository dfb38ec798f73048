"""Drafting a project spec from a sample of the data (``mlops project init``).

Owns what a first spec guesses from data: each column's type, nullability, range or allowed
values and datetime format; the key and event-time candidates; the task, positive class and
metric of the target; default rules and a training plan sized to the data. The draft is YAML
text with a comment on every inferred choice, validated with :func:`mlops_lib.spec.parse_spec`
before it is written, and an existing spec is never overwritten.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

# Heavy, at module level: only `mlops project init` imports this room (the CLI lazily).
import numpy as np
import pandas as pd
import yaml
from pandas.api import types as pt

from mlops_lib.features import MAX_ONEHOT_CATEGORIES
from mlops_lib.layout import LOGGED_COLUMNS
from mlops_lib.quality import EPOCH_UNITS
from mlops_lib.settings import Settings, get_settings
from mlops_lib.sources import SourceError, confine, resolve_paths
from mlops_lib.spec import DEFAULT_METRIC, NAME_RE, ColumnType, SpecError, parse_spec

Task = Literal["classification", "regression"]

SAMPLE_ROWS = 50_000
MIN_SAMPLE_ROWS = 10  # training.min_rows can be no lower
MAX_CATEGORIES = 20  # distinct strings (or ints of a target) that still make categories
CATEGORY_SHARE = 0.5  # ... when they are also at most this share of the non-null rows
MAX_CLASSES = 100
# A categorical feature with more distinct values than one-hot keeps is ordinal-encoded.
ORDINAL_ABOVE = MAX_ONEHOT_CATEGORIES
# Ranges are sanity bounds (a unit mix-up, a broken sensor), not the sample's tails: the seen
# span is widened by half of itself on each side, so newer batches and served rows fit.
RANGE_MARGIN = 0.5
MAX_NULL_FRACTION = 0.05
IMBALANCED_SHARE = 0.1
DATE_FORMATS = ("%Y/%m/%d", "%d.%m.%Y", "%d/%m/%Y", "%m/%d/%Y")
TIME_SUFFIXES = ("", " %H:%M", " %H:%M:%S")
EPOCH_RANGES = {"epoch_s": (1e9, 2e10), "epoch_ms": (1e12, 2e13)}
EVENT_TIME_NAMES = ("event_time", "timestamp", "event_date", "ts", "datetime", "date", "time")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
_ID_TOKENS = {"id", "key", "uuid", "guid"}
_CAMEL_ID = re.compile(r"[a-z](Id|ID|Key|UUID)$")
_TIME_TOKENS = {"time", "date", "ts", "timestamp", "datetime", "epoch"}
_FLAG_NAME = re.compile(r"^(is|has|was|can|should)_|_(flag|bool)$|^flag_", re.IGNORECASE)
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")


class DraftError(ValueError):
    """The data cannot be drafted into a spec; the message says what to change."""


@dataclass(frozen=True)
class Seen:
    """What a column holds in the sample."""

    rows: int
    nulls: int
    distinct: int

    @property
    def unique(self) -> bool:
        """Unique and non-null over the sample."""
        return self.rows > 0 and self.nulls == 0 and self.distinct == self.rows


@dataclass(frozen=True)
class ColumnDraft:
    """One inferred column of the schema and the reason for it (its YAML comment)."""

    name: str
    type: ColumnType
    seen: Seen
    note: str
    minimum: float | None = None
    maximum: float | None = None
    allowed: tuple[Any, ...] | None = None
    format: str | None = None
    parts: tuple[str, ...] = ()
    seen_range: tuple[float, float] | None = None  # numbers: smallest and largest seen
    latest: pd.Timestamp | None = None  # datetimes: the latest seen (UTC)

    @property
    def nullable(self) -> bool:
        return self.seen.nulls > 0


@dataclass(frozen=True)
class TaskDraft:
    """The target's task, metric and positive class, with the reasons."""

    task: Task
    metric: str
    note: str
    metric_note: str
    positive_class: Any = None
    positive_note: str = ""
    smallest_class_rows: int | None = None


@dataclass(frozen=True)
class Candidate:
    """A column chosen as the key or the event time, and why."""

    name: str
    note: str


@dataclass(frozen=True)
class TrainingDraft:
    """The training settings sized to the data, with the reasons."""

    min_rows: int
    min_rows_note: str
    cv_folds: int
    cv_note: str
    encoding: str
    encoding_note: str


@dataclass(frozen=True)
class RuleDraft:
    """One rule of the draft: its YAML fields and why."""

    fields: dict[str, Any]
    note: str


@dataclass(frozen=True)
class SourceDraft:
    """The spec's ``source.path`` (as the platform resolves it) and a remark on it."""

    path: str
    note: str = ""


@dataclass(frozen=True)
class DateGuess:
    """How a text column's dates are written: ``format`` None is ISO 8601; ``ambiguous``
    lists the formats that all fit (day/month or month/day)."""

    format: str | None
    parsed: pd.Series
    ambiguous: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sample:
    """The rows read to draft from and the files they came from."""

    frame: pd.DataFrame
    files: tuple[Path, ...]


@dataclass(frozen=True)
class Draft:
    """A drafted spec: its YAML text, the inferred choices and where it was written."""

    name: str
    text: str
    rows: int
    columns: tuple[ColumnDraft, ...]
    target: str
    task: TaskDraft
    key: Candidate | None
    event_time: Candidate | None
    training: TrainingDraft
    rules: tuple[RuleDraft, ...]
    source: SourceDraft
    warnings: tuple[str, ...] = ()
    path: Path | None = None


# --- Reading the sample -------------------------------------------------------------


def read_sample(data: str, base_dir: Path | None = None, rows: int = SAMPLE_ROWS) -> Sample:
    """The first ``rows`` rows of a CSV/Parquet file, folder or glob (relative to
    ``base_dir``, default the working directory), read as ingest reads them."""
    try:
        files = resolve_paths(data, base_dir or Path.cwd())
        frames, read = [], []
        for path in files:
            frames.append(_read_head(path, rows - sum(len(f) for f in frames)))
            read.append(path)
            if sum(len(f) for f in frames) >= rows:
                break
    except SourceError as exc:
        raise DraftError(str(exc)) from None
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    frame.columns = [str(c) for c in frame.columns]
    return Sample(frame, tuple(read))


def _read_head(path: Path, rows: int) -> pd.DataFrame:
    """At most ``rows`` rows of one file, with the options of ``sources.read_file``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise SourceError(f"source file {path} is empty (0 bytes)")
    kind = "csv" if path.suffix == ".csv" else "parquet"
    try:
        if kind == "csv":
            # Only empty cells are missing: 'N/A' and friends stay visible, as in ingest.
            return pd.read_csv(path, keep_default_na=False, na_values=[""], nrows=rows)
        parquet = pq.ParquetFile(path)
        batch = next(parquet.iter_batches(batch_size=rows), None)
        table = pa.Table.from_batches([batch]) if batch else parquet.schema_arrow.empty_table()
        return table.to_pandas()
    except Exception as exc:
        raise SourceError(f"cannot read {path} as {kind}: {type(exc).__name__}: {exc}") from exc


def source_for_spec(
    data: str, base_dir: Path, files: tuple[Path, ...], settings: Settings
) -> SourceDraft:
    """``data`` as the spec must write it to find the same files: relative paths in a spec
    are read from the repository root, so a path under it is written relative to it, any
    other path absolutely. The remark says when ingest would refuse the files."""
    raw = Path(data).expanduser()
    full = raw if raw.is_absolute() else base_dir / raw
    root = settings.repo_root
    path = Path(os.path.normpath(full)).as_posix()
    for f, r in ((Path(path), Path(os.path.normpath(root))), (full.resolve(), root.resolve())):
        if f.is_relative_to(r):
            path = f.relative_to(r).as_posix()
            break
    try:
        for file in files:
            confine(file, settings.allowed_data_roots)
    except SourceError as exc:
        return SourceDraft(path, str(exc))
    return SourceDraft(path)


# --- Columns ------------------------------------------------------------------------


def infer_column(name: str, series: pd.Series, *, is_target: bool = False) -> ColumnDraft:
    """A column's type, nullability, range, allowed values or datetime format."""
    values = series.dropna()
    seen = Seen(len(series), len(series) - len(values), _distinct(values))
    if values.empty:
        kind: ColumnType = "float" if pt.is_numeric_dtype(series) else "string"
        note = f"no values in the {seen.rows} rows: {kind} for now, set the real type"
        return ColumnDraft(name, kind, seen, note)
    if pt.is_bool_dtype(series) or _all_of(values, bool | np.bool_):
        return ColumnDraft(name, "bool", seen, "inferred: true/false values")
    if pt.is_datetime64_any_dtype(series):
        return _datetime_column(name, seen, pd.to_datetime(values, utc=True), None)
    if pt.is_numeric_dtype(series):
        return _numeric_column(name, series, values, seen, is_target)
    return _text_column(name, values, seen)


def _all_of(values: pd.Series, kind: Any) -> bool:
    """Every value is a ``kind`` (looked at one by one only in object columns)."""
    if isinstance(values.dtype, pd.StringDtype):
        return kind is str
    return values.dtype == object and all(isinstance(v, kind) for v in values)


def _distinct(values: pd.Series) -> int:
    try:
        return int(values.nunique())
    except TypeError:  # unhashable cells (lists in Parquet)
        return int(values.astype(str).nunique())


def _numeric_column(
    name: str, series: pd.Series, values: pd.Series, seen: Seen, is_target: bool
) -> ColumnDraft:
    finite = values[np.isfinite(values.astype("float64"))]
    # CSV readers turn an int column with empty cells into floats.
    integral = pt.is_integer_dtype(series) or (
        seen.nulls > 0 and not finite.empty and bool((finite % 1 == 0).all())
    )
    if integral and not is_target and (epoch := _epoch_format(name, finite)):
        parsed = pd.to_datetime(finite.astype("int64"), unit=EPOCH_UNITS[epoch], utc=True)
        return _datetime_column(name, seen, parsed, epoch)
    if integral and not is_target and _FLAG_NAME.search(name) and set(finite) <= {0, 1}:
        return ColumnDraft(name, "bool", seen, "inferred: 0/1 values and a yes/no name")
    kind: ColumnType = "int" if integral else "float"
    if finite.empty:
        return ColumnDraft(name, kind, seen, f"inferred: {kind}, no finite values")
    low, high = widened_range(finite, integral)
    lo, hi = float(finite.min()), float(finite.max())
    if lo == hi:
        note = f"inferred: {kind}, one value ({_number(lo)}): a constant tells a model nothing"
    else:
        note = (
            f"inferred: {kind}, {_counted(seen)}, seen {_number(lo)}..{_number(hi)}, "
            f"widened by {RANGE_MARGIN:.0%} of the span"
        )
    return ColumnDraft(name, kind, seen, note, low, high, seen_range=(lo, hi))


def widened_range(values: pd.Series, integral: bool) -> tuple[float, float]:
    """The seen range widened by ``RANGE_MARGIN`` of its span on each side (a constant by
    that share of its size, at least 1), kept at >= 0 when every value is, rounded outward."""
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo
    margin = RANGE_MARGIN * span if span > 0 else max(abs(hi) * RANGE_MARGIN, 1.0)
    low, high = lo - margin, hi + margin
    if lo >= 0:
        low = max(low, 0.0)
    if integral:
        return math.floor(low), math.ceil(high)
    digits = max(0, 2 - math.floor(math.log10(span or abs(hi) or 1.0)))
    scale = 10.0**digits
    return round(math.floor(low * scale) / scale, digits), round(
        math.ceil(high * scale) / scale, digits
    )


def _epoch_format(name: str, values: pd.Series) -> str | None:
    """epoch_s / epoch_ms for whole numbers in a plausible range under a time-like name."""
    tokens = set(re.split(r"[^a-z0-9]+", name.lower()))
    timely = bool(tokens & _TIME_TOKENS) or name.lower().endswith(("_at", "time", "date"))
    if not timely or values.empty:
        return None
    for fmt, (low, high) in EPOCH_RANGES.items():
        if low <= values.min() and values.max() <= high:
            return fmt
    return None


def _datetime_column(name: str, seen: Seen, parsed: pd.Series, fmt: str | None) -> ColumnDraft:
    span = f"{parsed.min():%Y-%m-%d}..{parsed.max():%Y-%m-%d}"
    how = f"format {fmt}" if fmt else "ISO 8601 or native datetimes"
    note = f"inferred: datetime, {how}, {span}"
    return ColumnDraft(name, "datetime", seen, note, format=fmt, latest=parsed.max())


def _text_column(name: str, values: pd.Series, seen: Seen) -> ColumnDraft:
    if not _all_of(values, str):
        return ColumnDraft(name, "string", seen, "inferred: string (values of mixed types)")
    guess = guess_date_format(values)
    if guess is not None and not guess.ambiguous:
        return _datetime_column(name, seen, guess.parsed, guess.format)
    if guess is not None:
        note = (
            f"dates that fit {' and '.join(guess.ambiguous)} alike: kept as text; to use them "
            "as dates set type datetime and the format that is meant"
        )
        return ColumnDraft(name, "string", seen, note)
    if _is_category(seen):
        allowed = tuple(sorted(values.unique().tolist(), key=str))
        note = f"inferred: category, {_counted(seen)}"
        if {str(v).lower() for v in allowed} <= {"yes", "no", "y", "n"}:
            note += " (yes/no text; a bool column takes true/false or 0/1)"
        return ColumnDraft(name, "category", seen, note, allowed=allowed)
    note = f"inferred: string, {_counted(seen)}"
    return ColumnDraft(name, "string", seen, note)


def _counted(seen: Seen) -> str:
    values = "value" if seen.distinct == 1 else "values"
    return f"{seen.distinct} distinct {values} in {seen.rows} rows"


def _is_category(seen: Seen) -> bool:
    return seen.distinct <= MAX_CATEGORIES and seen.distinct <= CATEGORY_SHARE * (
        seen.rows - seen.nulls
    )


def guess_date_format(values: pd.Series) -> DateGuess | None:
    """How text dates are written: ISO 8601, or the formats of ``DATE_FORMATS`` (with an
    optional time) that read every value; None when the values are not dates."""
    texts = values.astype(str)
    head = texts.head(200)
    if head.str.match(_ISO_DATE).all():
        parsed = _parse(texts, "ISO8601")
        return DateGuess(None, parsed) if parsed is not None else None
    fits: dict[str, pd.Series] = {}
    for fmt in (d + t for d in DATE_FORMATS for t in TIME_SUFFIXES):
        if _parse(head, fmt) is not None and (parsed := _parse(texts, fmt)) is not None:
            fits[fmt] = parsed
    if not fits:
        return None
    if len(fits) > 1:
        return DateGuess(None, next(iter(fits.values())), tuple(fits))
    ((fmt, parsed),) = fits.items()
    return DateGuess(fmt, parsed)


def _parse(texts: pd.Series, fmt: str) -> pd.Series | None:
    """Every value read with ``fmt`` (UTC), or None when one does not fit."""
    parsed = pd.to_datetime(texts, format=fmt, errors="coerce", utc=True)
    return parsed if bool(parsed.notna().all()) else None


# --- Target and task ----------------------------------------------------------------


def infer_task(column: ColumnDraft, values: pd.Series, task: str | None = None) -> TaskDraft:
    """The target's task (given or inferred), its metric and, for two classes, the
    positive class."""
    if task not in (None, *get_args(Task)):
        raise DraftError(f"task {task!r}: choose one of {list(get_args(Task))}")
    values = values.dropna()
    if column.type == "datetime":
        raise DraftError(f"target {column.name!r} holds dates: choose a label or a number")
    numeric = column.type in ("int", "float")
    if task is None:
        few = column.type == "int" and column.seen.distinct <= MAX_CATEGORIES
        task = "regression" if numeric and not few else "classification"
        kinds = {"int": "whole numbers", "float": "numbers", "bool": "true/false values"}
        what = kinds.get(column.type, "text labels")
        note = f"task: {column.seen.distinct} distinct {what} -> {task}"
    else:
        note = f"task: {task} (--task)"
    if task == "regression":
        if not numeric:
            raise DraftError(
                f"target {column.name!r} holds {column.type} values: regression "
                "needs numbers; use --task classification"
            )
        metric = DEFAULT_METRIC["regression"]
        return TaskDraft("regression", metric, note, f"metric {metric}: in the target's units")
    return _classification(column, values, note)


def _classification(column: ColumnDraft, values: pd.Series, note: str) -> TaskDraft:
    counts = values.value_counts()
    if len(counts) < 2:
        raise DraftError(
            f"target {column.name!r} has {len(counts)} class in the sample: "
            "a classifier needs at least two"
        )
    if len(counts) > MAX_CLASSES:
        raise DraftError(
            f"target {column.name!r} has {len(counts)} distinct values, more "
            f"than {MAX_CLASSES} classes: use --task regression or another target"
        )
    if column.type == "float" and not bool((values % 1 == 0).all()):
        raise DraftError(
            f"target {column.name!r} holds fractional numbers: class labels "
            "must be text, whole numbers or true/false; use --task regression"
        )
    smallest = int(counts.min())
    share = smallest / len(values)
    note = f"{note}; the smallest of {len(counts)} classes has {share:.0%} of rows"
    if len(counts) == 2:
        positive, why = positive_class(counts)
        metric_note = "metric roc_auc: ranks by score, whatever the threshold and class balance"
        metric = DEFAULT_METRIC["classification"]
        return TaskDraft("classification", metric, note, metric_note, positive, why, smallest)
    if share < IMBALANCED_SHARE:
        metric, why = "f1_macro", f"the smallest class has {share:.0%} of rows"
        metric_note = f"metric f1_macro because {why}: every class counts alike"
    else:
        metric = "accuracy"
        metric_note = f"metric accuracy: classes are balanced enough (smallest {share:.0%})"
    return TaskDraft("classification", metric, note, metric_note, smallest_class_rows=smallest)


def positive_class(counts: pd.Series) -> tuple[Any, str]:
    """The positive of two classes: 1, true or yes when present, else the minority class."""
    labels = [_py(v) for v in counts.index]
    for label in labels:
        # 1.0: a 0/1 column with empty cells is read as floats
        if label is True or (type(label) in (int, float) and label == 1):
            return label, f"positive class {_number(label)}: the usual positive label"
        if isinstance(label, str) and label.strip().lower() in ("1", "true", "yes", "y"):
            return label, f"positive class {label}: the usual positive label"
    minority = _py(counts.sort_values(kind="stable").index[0])
    share = counts.min() / counts.sum()
    return minority, f"positive class {minority}: the minority class ({share:.0%} of rows)"


def target_column(column: ColumnDraft, values: pd.Series, task: TaskDraft) -> ColumnDraft:
    """The target as the task needs it: a classifier's labels listed in ``allowed``."""
    if task.task == "regression":
        return column
    labels = values.dropna()
    kind: ColumnType = column.type
    if kind == "float":  # whole numbers only (checked by the task)
        kind, labels = "int", labels.astype("int64")
    elif kind == "string":
        kind = "category"
    allowed = tuple(sorted({_py(v) for v in labels.unique()}, key=str))
    note = f"target: {len(allowed)} classes in {column.seen.rows} rows"
    return replace(column, type=kind, allowed=allowed, minimum=None, maximum=None, note=note)


# --- Key, event time, training -------------------------------------------------------


def pick_key(columns: list[ColumnDraft], target: str) -> Candidate | None:
    """A unique, non-null column: named like an id, else text, else a row number."""
    unique = [c for c in columns if c.seen.unique and c.name != target]
    unique = [c for c in unique if c.type in ("int", "string")]
    for c in unique:
        if _id_like(c.name):
            return Candidate(c.name, "key candidate: unique and non-null, named like an id")
    for c in unique:
        if c.type == "string":
            return Candidate(c.name, "key candidate: unique and non-null text")
    for c in unique:
        lo, hi = c.seen_range or (0.0, -1.0)
        if hi - lo + 1 == c.seen.rows:
            return Candidate(c.name, "key candidate: unique and non-null row numbers")
    return None


def _id_like(name: str) -> bool:
    tokens = [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]
    return bool(tokens and tokens[-1] in _ID_TOKENS) or bool(_CAMEL_ID.search(name))


def pick_event_time(columns: list[ColumnDraft], taken: set[str], now: datetime) -> Candidate | None:
    """A non-null datetime column with nothing in the future, best named first."""
    found = [
        c
        for c in columns
        if c.type == "datetime"
        and not c.nullable
        and c.name not in taken
        and c.latest is not None
        and c.latest <= pd.Timestamp(now)
    ]
    if not found:
        return None
    best = min(found, key=lambda c: _time_name_rank(c.name))
    named = _time_name_rank(best.name) < len(EVENT_TIME_NAMES) + 1
    why = "named like one" if named else "the first such column"
    return Candidate(best.name, f"event time: a non-null datetime, none in the future, {why}")


def _time_name_rank(name: str) -> int:
    lower = name.lower()
    if lower in EVENT_TIME_NAMES:
        return EVENT_TIME_NAMES.index(lower)
    if lower.endswith("_at") or any(t in lower for t in ("time", "date")):
        return len(EVENT_TIME_NAMES)
    return len(EVENT_TIME_NAMES) + 1


def plan_training(features: list[ColumnDraft], rows: int, task: TaskDraft) -> TrainingDraft:
    """min_rows, folds and encoding sized to the sample."""
    min_rows = min(1000, max(MIN_SAMPLE_ROWS, rows // 2))
    min_rows_note = f"half the sample's {rows} rows, at most 1000: the first batch can train"
    folds, cv_note = 3, "3 folds (2 when a class has fewer than 4 rows)"
    smallest = task.smallest_class_rows
    if smallest is not None and smallest < 4:
        folds = 2
        cv_note = f"2 folds: the smallest class has {smallest} rows"
        if smallest < folds + 1:  # datasets.min_class_rows with 2 folds
            cv_note += (
                f", fewer than the {folds + 1} (one per fold, one held out) training needs: add "
                f"rows, or merge or drop that class"
            )
    wide = [
        c for c in features if c.type in ("string", "category") and c.seen.distinct > ORDINAL_ABOVE
    ]
    if wide:
        names = ", ".join(f"{c.name} ({c.seen.distinct})" for c in wide[:3])
        encoding, note = "ordinal", f"ordinal: more than {ORDINAL_ABOVE} distinct values in {names}"
    else:
        encoding, note = "onehot", f"onehot: no categorical feature has over {ORDINAL_ABOVE} values"
    return TrainingDraft(min_rows, min_rows_note, folds, cv_note, encoding, note)


def with_parts(column: ColumnDraft) -> ColumnDraft:
    """A datetime feature's model inputs: day of year and weekday."""
    return replace(column, parts=("day_of_year", "weekday"))


def draft_rules(
    columns: list[ColumnDraft], rows: int, key: Candidate | None, event_time: Candidate | None
) -> list[RuleDraft]:
    """Default quality rules that the sample itself passes."""
    floor = max(MIN_SAMPLE_ROWS, rows // 10)
    rules = [RuleDraft({"rule": "min_rows", "value": floor}, f"a tenth of {rows} rows, >= 10")]
    nullish = [c for c in columns if c.seen.nulls > MAX_NULL_FRACTION * c.seen.rows]
    null_rule: dict[str, Any] = {"rule": "max_null_fraction", "value": MAX_NULL_FRACTION}
    if not nullish:
        rules.append(RuleDraft(null_rule, "every column"))
    elif len(nullish) < len(columns):
        names = ", ".join(f"{c.name} ({c.seen.nulls / c.seen.rows:.0%})" for c in nullish[:5])
        others = [c.name for c in columns if c not in nullish]
        rules.append(RuleDraft(null_rule | {"columns": others}, f"not {names}: more nulls seen"))
    if key:
        rules.append(RuleDraft({"rule": "unique_key"}, f"{key.name} is unique in the sample"))
    if event_time:
        fields = {"rule": "event_time_not_in_future", "tolerance_seconds": 300}
        rules.append(RuleDraft(fields, f"{event_time.name} has no future times in the sample"))
    drift = {"rule": "distribution", "max_drift_fraction": 0.3, "p_value": 0.001}
    note = "warns when over 30% of the features drift from the previous accepted batch"
    rules.append(RuleDraft(drift | {"severity": "warning"}, note))
    return rules


# --- The draft ----------------------------------------------------------------------


def draft_spec(
    name: str,
    frame: pd.DataFrame,
    *,
    target: str,
    source: SourceDraft | str,
    task: str | None = None,
    now: datetime | None = None,
) -> Draft:
    """A spec drafted from a sample, validated; raises DraftError when the data cannot
    make one (and RuntimeError when the draft does not load: a bug here)."""
    check_name(name)
    check_columns(frame, target)
    columns = [infer_column(c, frame[c], is_target=c == target) for c in frame.columns]
    target_draft = next(c for c in columns if c.name == target)
    task_draft = infer_task(target_draft, frame[target], task)
    columns = [
        target_column(c, frame[target], task_draft) if c is target_draft else c for c in columns
    ]
    key = pick_key(columns, target)
    event_time = pick_event_time(
        columns, {target, key.name if key else target}, now or datetime.now(UTC)
    )
    identity = {target, *(x.name for x in (key, event_time) if x)}
    columns = [
        with_parts(c) if c.type == "datetime" and c.name not in identity else c for c in columns
    ]
    features = [c for c in columns if c.name not in identity]
    if not features:
        raise DraftError("no feature columns: every column is the target, key or event time")
    source = source if isinstance(source, SourceDraft) else SourceDraft(source)
    draft = Draft(
        name=name,
        text="",
        rows=len(frame),
        columns=tuple(columns),
        target=target,
        task=task_draft,
        key=key,
        event_time=event_time,
        training=plan_training(features, len(frame), task_draft),
        rules=tuple(draft_rules(columns, len(frame), key, event_time)),
        source=source,
        warnings=tuple(_warnings(columns, source)),
    )
    draft = replace(draft, text=render(draft))
    validate_draft(draft)
    return draft


def check_name(name: str) -> None:
    """A project name as the spec allows it (``spec.NAME_RE``)."""
    if not NAME_RE.match(name):
        raise DraftError(
            f"project name {name!r}: must be 2-41 characters: lowercase letters, digits and "
            "'_', starting with a letter"
        )


def check_columns(frame: pd.DataFrame, target: str) -> None:
    """The sample can make a spec: enough rows, the target among the columns, no column
    named like one the prediction log adds."""
    names = [str(c) for c in frame.columns]
    if target not in names:
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise DraftError(f"target {target!r} is not a column of the data (columns: {shown})")
    reserved = [c for c in names if c in LOGGED_COLUMNS]
    if reserved:
        raise DraftError(
            f"column names {reserved} are reserved (the prediction log adds "
            f"{', '.join(LOGGED_COLUMNS)}): rename them in the data"
        )
    duplicated = sorted({c for c in names if names.count(c) > 1})
    if duplicated:
        raise DraftError(f"columns {duplicated} appear more than once")
    if len(frame) < MIN_SAMPLE_ROWS:
        raise DraftError(
            f"the data has {len(frame)} rows; training needs at least {MIN_SAMPLE_ROWS}"
        )


def _warnings(columns: list[ColumnDraft], source: SourceDraft) -> list[str]:
    out = [source.note] if source.note else []
    out += [f"column {c.name!r}: {c.note}" for c in columns if c.seen.nulls == c.seen.rows]
    out += [f"column {c.name!r}: {c.note}" for c in columns if "alike" in c.note]
    return out


def validate_draft(draft: Draft) -> None:
    """The text loads as a valid spec with the drafted columns, in order."""
    try:
        spec = parse_spec(yaml.safe_load(draft.text), f"{draft.name}.yaml")
    except (SpecError, yaml.YAMLError) as exc:
        raise RuntimeError(f"the drafted spec does not load (a drafting bug): {exc}") from exc
    if list(spec.schema.columns) != [c.name for c in draft.columns]:
        raise RuntimeError("the drafted spec's column names differ from the data's")


def init_project(
    name: str,
    data: str,
    target: str,
    *,
    task: str | None = None,
    settings: Settings | None = None,
    base_dir: Path | None = None,
    now: datetime | None = None,
) -> Draft:
    """Draft ``<projects_dir>/<name>.yaml`` from a sample of ``data`` (a CSV/Parquet file,
    folder or glob, relative to ``base_dir``, default the working directory); never
    overwrites a spec. Raises DraftError naming what to change."""
    settings = settings or get_settings()
    check_name(name)
    path = free_spec_path(settings.projects_dir, name)
    base_dir = base_dir or Path.cwd()
    sample = read_sample(data, base_dir)
    source = source_for_spec(data, base_dir, sample.files, settings)
    draft = draft_spec(name, sample.frame, target=target, source=source, task=task, now=now)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x", encoding="utf-8") as out:
            out.write(draft.text)
    except FileExistsError:
        raise DraftError(f"{path} exists: a draft never overwrites a spec") from None
    return replace(draft, path=path)


def free_spec_path(projects_dir: Path, name: str) -> Path:
    """Where the draft goes; DraftError when the project already has a spec."""
    for suffix in (".yaml", ".yml"):
        existing = projects_dir / f"{name}{suffix}"
        if existing.exists():
            raise DraftError(
                f"{existing} exists: a draft never overwrites a spec; remove it or choose "
                "another name"
            )
    return projects_dir / f"{name}.yaml"


def summary(draft: Draft) -> list[str]:
    """What the draft inferred and the next steps, as lines for the terminal."""
    where = draft.path or f"{draft.name}.yaml"
    task = draft.task
    positive = task.positive_class
    shown = "" if positive is None else f", positive class {_scalar(positive)}"
    return [
        f"wrote {where}: {len(draft.columns)} columns from {draft.rows} rows of "
        f"{draft.source.path}",
        f"target {draft.target}: {task.task}{shown}; {task.metric_note}",
        f"key: {draft.key.name if draft.key else 'none found'}",
        f"event time: {draft.event_time.name if draft.event_time else 'none found'}",
        *(f"warning: {w}" for w in draft.warnings),
        "next steps:",
        f"  1. review the inferred choices (the comments in {where})",
        f"  2. mlops project validate {where}",
        "  3. mlops stack up  (when the stack is not running)",
        f"  4. mlops run {draft.name} ingest  (reads source.path; the accepted batch trains, "
        "gates and deploys)",
        f"  5. mlops lineage {draft.name}",
    ]


# --- YAML text ----------------------------------------------------------------------


def render(draft: Draft) -> str:
    """The draft as YAML, a comment on every inferred choice."""
    sections = (
        _head_lines(draft),
        _schema_lines(draft),
        _target_lines(draft),
        ["rules:", *(_item(r.fields, r.note) for r in draft.rules)],
        _training_lines(draft),
        _operations_lines(draft),
    )
    return "\n\n".join("\n".join(s) for s in sections) + "\n"


def _head_lines(d: Draft) -> list[str]:
    description = (
        f"Predict {d.target} ({d.task.task}). Drafted from {d.rows} rows of {d.source.path}; "
        "review the inferred schema, rules and training budget."
    )
    return [
        f"# Drafted by `mlops project init` from {d.rows} rows of {d.source.path}.",
        "# Every inferred choice has a comment: review them, then `mlops project validate`.",
        f"name: {d.name}",
        f"description: {json.dumps(description, ensure_ascii=False)}",
        "",
        "source:",
        _line(f"  path: {_scalar(d.source.path)}", d.source.note),
    ]


def _schema_lines(d: Draft) -> list[str]:
    lines = ["schema:"]
    if d.key:
        lines.append(_line(f"  key: {_scalar(d.key.name)}", d.key.note))
    if d.event_time:
        lines.append(_line(f"  event_time: {_scalar(d.event_time.name)}", d.event_time.note))
    lines.append("  columns:")
    for c in d.columns:
        lines.append(_line(f"    {_scalar(c.name)}: {_flow(_column_fields(c))}", c.note))
    return lines


def _column_fields(c: ColumnDraft) -> dict[str, Any]:
    fields: dict[str, Any] = {"type": c.type, "nullable": c.nullable}
    optional = {"min": c.minimum, "max": c.maximum, "allowed": c.allowed, "format": c.format}
    fields |= {k: v for k, v in optional.items() if v is not None}
    if c.parts:
        fields["parts"] = c.parts
    return fields


def _target_lines(d: Draft) -> list[str]:
    lines = [
        "target:",
        f"  column: {_scalar(d.target)}",
        _line(f"  task: {d.task.task}", d.task.note),
    ]
    if d.task.positive_class is not None:
        lines.append(
            _line(f"  positive_class: {_scalar(d.task.positive_class)}", d.task.positive_note)
        )
    return lines


def _training_lines(d: Draft) -> list[str]:
    t = d.training
    return [
        "training:",
        _line(f"  metric: {d.task.metric}", d.task.metric_note),
        "  budget: {trials: 8, seconds: 120}",
        _line(f"  cv_folds: {t.cv_folds}", t.cv_note),
        "  holdout_fraction: 0.2",
        "  seed: 42",
        "  families: [linear, random_forest, hist_gradient_boosting]",
        _line(f"  min_rows: {t.min_rows}", t.min_rows_note),
        _line(f"  encoding: {t.encoding}", t.encoding_note),
    ]


def _operations_lines(d: Draft) -> list[str]:
    regression = d.task.task == "regression"
    guard = "r2" if regression else "accuracy"
    features = len(d.columns) - len({d.target, *(x.name for x in (d.key, d.event_time) if x)})
    return [
        "promotion:",
        _line(
            f"  min_improvement: {0.0 if regression else 0.002}",
            f"in {d.task.metric}" + ("'s units" if regression else ""),
        ),
        _line(f"  guards: {{{guard}: 0.01}}", f"a challenger may lose at most 0.01 {guard}"),
        "  manual_approval: false",
        "",
        "serving:\n  max_batch_size: 1000\n  max_latency_ms: 50",
        _line("  replicas: 1", "serving processes behind the gateway (1..8)"),
        "",
        "monitoring:",
        '  schedule: "@hourly"\n  window: 1h\n  method: auto\n  drift_threshold: 0.05',
        f"  min_drifted_features: {min(2, features)}",
        "  prediction_drift_limit: 0.1",
        "  cooldown_minutes: 60",
        f"  # metric_floor: the lowest live {d.task.metric} to accept, once its level is known",
        "",
        "airflow:",
        f"  owner: ml-platform\n  tags: [{d.name}]\n  retries: 2",
        "  retry_delay_seconds: 10\n  max_retry_delay_seconds: 120",
    ]


def _line(text: str, note: str) -> str:
    """A YAML line with its note as a comment (one line)."""
    if not note:
        return text
    return f"{text}  # {' '.join(note.split())}"


def _item(fields: dict[str, Any], note: str) -> str:
    return _line(f"  - {_flow(fields)}", note)


def _flow(fields: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in fields.items()) + "}"


def _value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    return _scalar(value)


def _scalar(value: Any) -> str:
    """One YAML scalar: plain when it reads back as the same value, else quoted."""
    value = _py(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    text = str(value)
    if _PLAIN.match(text) and yaml.safe_load(text) == text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _number(value: float | int) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return np.format_float_positional(float(value), trim="-")


def _py(value: Any) -> Any:
    """A numpy scalar as the Python value (YAML and pydantic take those)."""
    return value.item() if isinstance(value, np.generic) else value
