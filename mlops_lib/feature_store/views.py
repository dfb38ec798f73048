"""Feature views computed from an event table: pure pandas, no I/O, no Feast.

This module owns what a view's values are. :func:`check_source` validates an event table
against its source's declared columns (the quality gate's schema steps) and types it;
:func:`compute_view` turns a checked table into the view's table: one row per entity and
source time, each feature as of that time (``count``/``sum``/``mean``/``min``/``max`` over
the window ``(t - days, t]``, ``last`` the latest value at or before ``t``). Feast, in its own
environment, reads these tables as the views' offline sources.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_lib.quality import check_columns, parse_datetimes
from mlops_lib.spec import (
    Column,
    FeatureSource,
    FeatureStoreSpec,
    FeatureView,
    ProjectSpec,
    ViewFeature,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from pandas.core.window.rolling import Rolling

# The time column of every computed view table (UTC, tz-aware): Feast's timestamp field.
EVENT_TIMESTAMP = "event_timestamp"
# Marks the source's own rows among the window ends added beside them.
REAL = "__mlops_real_row"
NS_PER_DAY = 86_400 * 10**9


class FeatureSourceError(ValueError):
    """An event table breaks its source's declared columns; the message lists every problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(
            f"event source {source!r} rejected: {len(problems)} problems\n"
            + "\n".join(f"  - {p}" for p in problems)
        )


def store_spec(spec: ProjectSpec) -> FeatureStoreSpec:
    """The spec's ``features:`` section, or ValueError when it has none."""
    if spec.feature_store is None:
        raise ValueError(f"project {spec.name!r} has no features section")
    return spec.feature_store


def feature_source(spec: ProjectSpec, name: str) -> FeatureSource:
    """A source of the spec's ``features:`` section, or ValueError naming the known ones."""
    store = store_spec(spec)
    if name not in store.sources:
        raise ValueError(f"{name!r} is not a feature source; sources: {list(store.sources)}")
    return store.sources[name]


def feature_view(spec: ProjectSpec, name: str) -> FeatureView:
    """A view of the spec's ``features:`` section, or ValueError naming the known ones."""
    store = store_spec(spec)
    if name not in store.views:
        raise ValueError(f"{name!r} is not a feature view; views: {list(store.views)}")
    return store.views[name]


def view_columns(spec: ProjectSpec, view_name: str) -> list[str]:
    """The features of a view, in spec order (its table's columns after key and time)."""
    return list(feature_view(spec, view_name).features)


def join_key(spec: ProjectSpec, view_name: str) -> str:
    """The column that names a view's entity."""
    return store_spec(spec).entities[feature_view(spec, view_name).entity].join_key


def check_source(df: pd.DataFrame, spec: ProjectSpec, source_name: str) -> pd.DataFrame:
    """An event table checked against its source's columns and typed as declared.

    Every blocking violation (missing column, wrong type, nulls in a non-nullable column or in
    the timestamp, out of range, not allowed) is collected into one :class:`FeatureSourceError`.
    The result holds the declared columns in declared order: numbers as float64 / Int64,
    strings and categories as object, bools as boolean, datetimes as UTC timestamps.
    """
    columns = _time_required(feature_source(spec, source_name))
    df = _empty_numbers_as_floats(df, columns)
    problems = [
        v.line().removeprefix("BLOCKING ")
        for v in check_columns(df, columns)
        if v.severity == "blocking"
    ]
    if problems:
        raise FeatureSourceError(source_name, problems)
    return _typed(df, columns)


def _time_required(source: FeatureSource) -> dict[str, Column]:
    """The source's columns with its timestamp non-nullable: a row without a time has no
    place in any window."""
    stamp = source.columns[source.timestamp]
    return {**source.columns, source.timestamp: stamp.model_copy(update={"nullable": False})}


def _empty_numbers_as_floats(df: pd.DataFrame, columns: dict[str, Column]) -> pd.DataFrame:
    """Numeric columns without a value (no rows, or only nulls) as floats: a table read from
    rows of one kind (e.g. only tickets, no amounts) holds them as objects, which the type
    check would refuse although every value casts."""
    empty = [
        name
        for name, col in columns.items()
        if col.type in ("int", "float") and name in df and not df[name].notna().any()
    ]
    return df.astype(dict.fromkeys(empty, "float64")) if empty else df


def _typed(df: pd.DataFrame, columns: dict[str, Column]) -> pd.DataFrame:
    import pandas as pd

    out = {}
    for name, col in columns.items():
        s = df[name]
        if col.type == "datetime":
            out[name] = parse_datetimes(s, col)
        elif col.type == "int":
            out[name] = pd.to_numeric(s).astype("Int64")
        elif col.type == "float":
            out[name] = pd.to_numeric(s).astype("float64")
        elif col.type == "bool":
            out[name] = s.map({0: False, 1: True}).astype("boolean")
        else:
            out[name] = s.astype(object)
    return pd.DataFrame(out, index=df.index)


def compute_view(events: pd.DataFrame, spec: ProjectSpec, view_name: str) -> pd.DataFrame:
    """A view's table from a checked event table of its source.

    One row per (join key, distinct time) at which the entity has a source row, or at which
    one of its rows leaves a window (``t + days``: the values then drop, as a point-in-time
    join after it must see; a label long after an entity's last event does not get the
    counts of its last event); columns:
    the join key, :data:`EVENT_TIMESTAMP`, then each feature in spec order (counts int64,
    the rest float64, NaN when no row matches). Each feature looks at the entity's rows that
    equal its ``where`` values and, when it names a column, have a value there: ``count``,
    ``sum``, ``mean``, ``min``, ``max`` over the times in ``(t - days, t]`` (every row at ``t``
    included), ``last`` the latest value at or before ``t`` (on a tie, the last in the
    table's order). Rows without a join key are ignored. Sorted by join key, then time.
    """
    view = feature_view(spec, view_name)
    key = join_key(spec, view_name)
    timestamp = feature_source(spec, view.source).timestamp
    events = _with_window_ends(events, key, timestamp, view)
    line = _Timeline.of(events, key, timestamp, [*_used_columns(view), REAL])
    rows = line.rows.loc[line.last, [key, timestamp]].reset_index(drop=True)
    rows = rows.rename(columns={timestamp: EVENT_TIMESTAMP})
    starts: dict[int, np.ndarray] = {}  # window starts per ``days``, shared by features
    for name, feature in view.features.items():
        if feature.days is not None and feature.days not in starts:
            starts[feature.days] = line.start(feature.days)
        start = starts[feature.days] if feature.days is not None else None
        rows[name] = _feature(line, feature, start)
    return rows


def _with_window_ends(
    events: pd.DataFrame, key: str, timestamp: str, view: FeatureView
) -> pd.DataFrame:
    """The events, marked :data:`REAL`, and for each window length a row per event when it
    leaves that window (only the key and time: no feature counts or takes it)."""
    import pandas as pd

    real = events.assign(**{REAL: True})
    stamps = pd.to_datetime(events[timestamp], utc=True)
    windows = sorted({f.days for f in view.features.values() if f.days is not None})
    ends = [
        pd.DataFrame({key: events[key].to_numpy(), timestamp: stamps + pd.Timedelta(days=days)})
        for days in windows
    ]
    if not ends:
        return real
    return pd.concat([real, *ends], ignore_index=True).fillna({REAL: False})


def _used_columns(view: FeatureView) -> list[str]:
    used = {c for f in view.features.values() for c in [f.column, *f.where] if c is not None}
    return sorted(used)


@dataclass
class _Timeline:
    """An event table sorted by entity then time, with the positions windows search.

    ``positions`` orders rows as (entity, time) in one int64: ``code * (T + 1) + rank`` where
    ``rank`` is how many distinct times are at or before the row's, so equal times share a
    position and a search for (entity, any time) lands inside that entity's rows.
    """

    rows: pd.DataFrame
    codes: np.ndarray
    times: np.ndarray
    distinct: np.ndarray
    positions: np.ndarray
    end: np.ndarray  # per row: one past the last row of its entity at its time
    last: np.ndarray  # per row: it is the last of its entity at its time
    factorized: dict[str, Any] = field(default_factory=dict)  # ``where`` columns' codes

    @classmethod
    def of(cls, events: pd.DataFrame, key: str, timestamp: str, used: list[str]) -> _Timeline:
        import numpy as np
        import pandas as pd

        stamps = pd.to_datetime(events[timestamp], utc=True)
        keep = (events[key].notna() & stamps.notna()).to_numpy()
        frame = events.loc[keep, [key, *[c for c in used if c not in (key, timestamp)]]]
        frame.insert(1, timestamp, stamps[keep].array)
        codes = pd.factorize(frame[key], sort=True)[0].astype("int64")
        times = frame[timestamp].dt.tz_convert(None).to_numpy("datetime64[ns]").view("int64")
        order = np.lexsort((times, codes))  # stable: ties keep the table's order
        codes, times = codes[order], times[order]
        distinct = np.unique(times)
        positions = codes * (len(distinct) + 1) + np.searchsorted(distinct, times, "right")
        last = np.append(positions[1:] != positions[:-1], True)[: len(positions)]
        ends = np.flatnonzero(last) + 1
        end = np.repeat(ends, np.diff(ends, prepend=0))
        rows = frame.iloc[order].reset_index(drop=True)
        return cls(rows, codes, times, distinct, positions, end, last)

    def start(self, days: int) -> np.ndarray:
        """Per row: the first row of its entity later than ``days`` days before its time."""
        import numpy as np

        since = self.times - days * NS_PER_DAY
        rank = np.searchsorted(self.distinct, since, "right")
        return np.searchsorted(
            self.positions, self.codes * (len(self.distinct) + 1) + rank, "right"
        )

    def equal(self, column: str, value: Any) -> np.ndarray:
        """Rows whose ``column`` equals ``value`` (each column factorized once, not compared
        row by row per feature)."""
        import numpy as np
        import pandas as pd

        if column not in self.factorized:
            self.factorized[column] = pd.factorize(self.rows[column])
        codes, uniques = self.factorized[column]
        return np.isin(codes, [i for i, u in enumerate(uniques) if u == value])


def _feature(line: _Timeline, feature: ViewFeature, start: np.ndarray | None) -> np.ndarray:
    """One feature's values at the last row of each (entity, time)."""
    import numpy as np
    import pandas as pd

    ok = _matching(line, feature)
    if feature.aggregate == "count":
        assert start is not None  # the spec gives count a window
        seen = np.concatenate(([0], np.cumsum(ok, dtype="int64")))
        return (seen[line.end] - seen[start])[line.last]
    values = np.where(ok, _numbers(line.rows[feature.column]), np.nan)
    if feature.aggregate == "last":
        latest = pd.Series(values).groupby(line.codes).ffill()
        return latest.to_numpy("float64")[line.last]
    assert start is not None  # the spec gives every aggregate but last a window
    window = _rolling(values, start, line.end)
    return getattr(window, feature.aggregate)().to_numpy("float64")[line.last]


def _matching(line: _Timeline, feature: ViewFeature) -> np.ndarray:
    """Rows equal to the feature's ``where`` values and with a value in its column."""

    ok = line.rows[REAL].to_numpy(dtype=bool)
    for column, value in feature.where.items():
        ok &= line.equal(column, value)
    if feature.column is not None:
        ok &= line.rows[feature.column].notna().to_numpy()
    return ok


def _numbers(values: pd.Series) -> np.ndarray:
    import numpy as np

    return values.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)


def _rolling(values: np.ndarray, start: np.ndarray, end: np.ndarray) -> Rolling:
    """A rolling window over ``values`` where row i aggregates ``values[start[i]:end[i]]``
    (both bounds non-decreasing, as pandas' variable windows need)."""
    import pandas as pd
    from pandas.api.indexers import BaseIndexer

    class Bounds(BaseIndexer):
        def get_window_bounds(
            self,
            num_values: int = 0,
            min_periods: int | None = None,
            center: bool | None = None,
            closed: str | None = None,
            step: int | None = None,
        ) -> tuple[np.ndarray, np.ndarray]:
            return start, end

    return pd.Series(values).rolling(Bounds(), min_periods=1)
