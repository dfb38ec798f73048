"""Data quality gate: the spec's schema and rules checked on one batch, all at once.

This module owns the gate itself: the verdict types (``Violation``, ``QualityReport``,
``DataQualityError``), the schema steps every batch goes through (required columns, types,
nullability, ranges, allowed values; ``SCHEMA_STEPS``), one checker per ``rule:`` kind of the
spec (``RULE_CHECKERS``, registered with ``@_checks(SpecRuleClass)`` next to each other), and
``coerce``, which casts a passing batch to the declared types. Adding a rule kind means a class
in ``mlops_lib.spec`` and a ``@_checks`` function here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, get_args

from mlops_lib.layout import PROVENANCE_COLUMNS
from mlops_lib.profiles import drifted_columns, profile, sample
from mlops_lib.spec import (
    EPOCH_FORMATS,
    Column,
    DistributionRule,
    EventTimeNotInFutureRule,
    MaxNullFractionRule,
    MinRowsRule,
    ProjectSpec,
    Schema,
    UniqueKeyRule,
)

if TYPE_CHECKING:
    import pandas as pd

MAX_EXAMPLES = 5


@dataclass
class Violation:
    """One broken rule: which rule, on which column, how many rows, a few examples."""

    rule: str
    message: str
    column: str | None = None
    count: int = 0
    examples: list[Any] = field(default_factory=list)
    severity: str = "blocking"

    def line(self) -> str:
        col = f" [{self.column}]" if self.column else ""
        ex = f"; examples: {self.examples}" if self.examples else ""
        cnt = f" ({self.count} rows)" if self.count else ""
        return f"{self.severity.upper()} {self.rule}{col}: {self.message}{cnt}{ex}"


@dataclass
class QualityReport:
    """Outcome of the gate on one batch."""

    project: str
    rows: int
    columns: list[str]
    violations: list[Violation]
    checked_rules: list[str]
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    # whylogs profile of the batch when a rule needed one (not part of the JSON report).
    profile: Any = field(default=None, repr=False, compare=False)

    @property
    def blocking(self) -> list[Violation]:
        return [v for v in self.violations if v.severity == "blocking"]

    @property
    def warnings(self) -> list[Violation]:
        return [v for v in self.violations if v.severity == "warning"]

    @property
    def passed(self) -> bool:
        return not self.blocking

    def summary(self) -> str:
        verdict = "passed" if self.passed else "rejected"
        return (
            f"{verdict}: {len(self.checked_rules)} rules on {self.rows} rows, "
            f"{len(self.blocking)} blocking violations, {len(self.warnings)} warnings"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "passed": self.passed,
            "summary": self.summary(),
            "rows": self.rows,
            "columns": self.columns,
            "checked_rules": self.checked_rules,
            "violations": [asdict(v) for v in self.violations],
            "created_at": self.created_at,
        }


class DataQualityError(RuntimeError):
    """A batch broke blocking rules; the message lists every violation."""

    def __init__(self, project: str, violations: list[Violation], where: str = ""):
        self.violations = violations
        head = f"batch for project {project!r} rejected: {len(violations)} blocking violations"
        if where:
            head += f" (report: {where})"
        super().__init__(head + "\n" + "\n".join(f"  - {v.line()}" for v in violations))


def examples(values: pd.Series) -> list[Any]:
    out = []
    for v in values.head(MAX_EXAMPLES).tolist():
        if hasattr(v, "isoformat"):
            v = v.isoformat()
        elif isinstance(v, float) and v != v:
            v = None
        out.append(v)
    return out


def parse_datetimes(values: pd.Series, col: Column) -> pd.Series:
    """A datetime column's values as UTC timestamps, read as its ``format`` says (ISO 8601
    and other unambiguous forms by default); NaT where a value does not parse."""
    import pandas as pd
    from pandas.api import types as pt

    if pt.is_datetime64_any_dtype(values):
        return pd.to_datetime(values, utc=True)
    if col.format in EPOCH_FORMATS:
        numbers = pd.to_numeric(values, errors="coerce")
        unit = EPOCH_UNITS[col.format]
        return pd.to_datetime(numbers, unit=unit, utc=True, errors="coerce")
    return pd.to_datetime(values, utc=True, errors="coerce", format=col.format or "mixed")


EPOCH_UNITS = {"epoch_s": "s", "epoch_ms": "ms"}


def as_written(values: pd.Series, col: Column) -> pd.Series:
    """Datetime values written as the column's ``format`` says (ISO 8601 without one), as a
    request to the model's endpoint sends them: the inverse of :func:`parse_datetimes`."""
    import pandas as pd

    stamps = parse_datetimes(values, col)
    if col.format in EPOCH_FORMATS:
        step = pd.Timedelta(1, unit=EPOCH_UNITS[col.format])
        numbers = (stamps - pd.Timestamp(0, tz="UTC")) // step
        return numbers.astype("Int64").astype(object).where(stamps.notna(), None)
    text = stamps.dt.strftime(col.format) if col.format else stamps.map(_iso)
    return text.astype(object).where(stamps.notna(), None)


def _iso(stamp: Any) -> str | None:
    return None if stamp is None or stamp is getattr(stamp, "NaT", None) else stamp.isoformat()


def _type_ok(series: pd.Series, col: Column) -> tuple[bool, pd.Series | None]:
    """Whether a column holds the declared type; returns bad values when it does not."""
    import pandas as pd
    from pandas.api import types as pt

    declared = col.type
    non_null = series.dropna()
    if declared in ("int", "float"):
        if pt.is_bool_dtype(series):
            return False, non_null.head(MAX_EXAMPLES)
        if pt.is_numeric_dtype(series):
            if declared == "int" and pt.is_float_dtype(series):
                frac = non_null[(non_null % 1) != 0]
                return frac.empty, frac
            return True, None
        coerced = pd.to_numeric(non_null, errors="coerce")
        return False, non_null[coerced.isna()]
    if declared in ("string", "category"):
        if isinstance(series.dtype, pd.StringDtype):
            return True, None
        if pt.is_string_dtype(series) or pt.is_object_dtype(series):
            bad = non_null[~non_null.map(lambda v: isinstance(v, str))]
            return bad.empty, bad
        return False, non_null.head(MAX_EXAMPLES)
    if declared == "bool":
        if pt.is_bool_dtype(series):
            return True, None
        bad = non_null[~non_null.isin([0, 1, True, False])]
        return bad.empty, bad
    if declared == "datetime":
        if pt.is_datetime64_any_dtype(series):
            return True, None
        bad = non_null[parse_datetimes(non_null, col).isna()]
        return bad.empty, bad
    return True, None


def coerce(df: pd.DataFrame, spec: ProjectSpec) -> pd.DataFrame:
    """Cast the declared columns to their declared types (after a passing check)."""
    import pandas as pd

    out = df.copy()
    for name, col in spec.schema.columns.items():
        if name not in out:
            continue
        s = out[name]
        if col.type == "datetime":
            out[name] = parse_datetimes(s, col)
        elif col.type == "int":
            out[name] = pd.to_numeric(s).astype("Int64" if s.isna().any() else "int64")
        elif col.type == "float":
            out[name] = pd.to_numeric(s).astype("float64")
        elif col.type in ("string", "category"):
            out[name] = s.astype("string")
        elif col.type == "bool":
            out[name] = s.astype("boolean")
    return out


@dataclass
class BatchContext:
    """What the steps and checkers of one ``check_batch`` call share."""

    df: pd.DataFrame
    spec: ProjectSpec
    now: datetime
    previous_profile: Any | None = None
    # Declared columns present in the batch, in schema order.
    present: list[str] = field(default_factory=list)
    # Per present column: (holds the declared type, bad values or None), from ``_type_ok``.
    type_checks: dict[str, tuple[bool, pd.Series | None]] = field(default_factory=dict)
    # whylogs profile of the batch, set by the distribution checker when it runs.
    profile: Any = None
    # Production rows folded in by continuous training carry their provenance columns.
    provenance: bool = False

    def typed_ok(self, name: str | None) -> bool:
        check = self.type_checks.get(name) if name is not None else None
        return bool(check and check[0])


def _context(
    df: pd.DataFrame,
    spec: ProjectSpec,
    previous_profile: Any | None,
    now: datetime,
    provenance: bool = False,
) -> BatchContext:
    columns = spec.schema.columns
    present = [c for c in columns if c in df.columns]
    return BatchContext(
        df=df,
        spec=spec,
        now=now,
        previous_profile=previous_profile,
        present=present,
        type_checks={name: _type_ok(df[name], columns[name]) for name in present},
        provenance=provenance,
    )


# --- Schema steps: run on every batch, in this order, before the spec's rules. ---


def _check_required_columns(ctx: BatchContext) -> list[Violation]:
    columns = ctx.spec.schema.columns
    out = [
        Violation("required_columns", "column is missing", column=name)
        for name in columns
        if name not in ctx.df.columns
    ]
    expected = PROVENANCE_COLUMNS if ctx.provenance else ()
    extra = [c for c in ctx.df.columns if c not in columns and c not in expected]
    if extra:
        out.append(
            Violation(
                "required_columns",
                f"unexpected columns {extra} (renamed?)",
                severity="warning",
                examples=extra[:MAX_EXAMPLES],
            )
        )
    return out


def _check_types(ctx: BatchContext) -> list[Violation]:
    out = []
    for name in ctx.present:
        ok, bad = ctx.type_checks[name]
        if not ok:
            out.append(
                Violation(
                    "types",
                    f"expected {ctx.spec.schema.columns[name].type}, found {ctx.df[name].dtype}",
                    column=name,
                    count=len(bad) if bad is not None else 0,
                    examples=examples(bad) if bad is not None else [],
                )
            )
    return out


def _check_not_null(ctx: BatchContext) -> list[Violation]:
    out = []
    for name in ctx.present:
        if not ctx.spec.schema.columns[name].nullable:
            nulls = int(ctx.df[name].isna().sum())
            if nulls:
                out.append(Violation("not_null", "nulls in a non-nullable column", name, nulls))
    return out


def _rows_violation(
    ctx: BatchContext, rule: str, message: str, name: str, mask: pd.Series
) -> Violation:
    """A violation of the rows where ``mask`` holds, with their count and a few values."""
    return Violation(rule, message, name, int(mask.sum()), examples(ctx.df.loc[mask, name]))


def _check_ranges(ctx: BatchContext) -> list[Violation]:
    import pandas as pd

    df, out = ctx.df, []
    for name in ctx.present:
        col = ctx.spec.schema.columns[name]
        if (col.min is None and col.max is None) or not ctx.typed_ok(name):
            continue
        values = pd.to_numeric(df[name], errors="coerce")
        mask = pd.Series(False, index=df.index)
        if col.min is not None:
            mask |= values < col.min
        if col.max is not None:
            mask |= values > col.max
        if mask.any():
            out.append(
                _rows_violation(ctx, "ranges", f"values outside [{col.min}, {col.max}]", name, mask)
            )
    return out


def _check_finite(ctx: BatchContext) -> list[Violation]:
    """Numbers must be finite: +-Infinity (or a number too large for a float) is refused;
    NaN counts as missing and is the nullability check's."""
    import numpy as np
    import pandas as pd

    df, out = ctx.df, []
    for name in ctx.present:
        col = ctx.spec.schema.columns[name]
        if col.type not in ("int", "float") or not ctx.typed_ok(name):
            continue
        values = pd.to_numeric(df[name], errors="coerce").astype("float64")
        mask = np.isinf(values)
        if mask.any():
            message = "infinite values (or numbers too large for a float)"
            out.append(_rows_violation(ctx, "finite", message, name, mask))
    return out


def _check_allowed_values(ctx: BatchContext) -> list[Violation]:
    out = []
    for name in ctx.present:
        col = ctx.spec.schema.columns[name]
        if not col.allowed or not ctx.typed_ok(name):
            continue
        s = ctx.df[name].dropna()
        bad = s[~s.isin(col.allowed)]
        if not bad.empty:
            out.append(
                Violation(
                    "allowed_values",
                    f"values not in {col.allowed}",
                    name,
                    len(bad),
                    sorted({str(v) for v in bad.unique()[:MAX_EXAMPLES]}),
                )
            )
    return out


SchemaStep = Callable[[BatchContext], list[Violation]]
# (name in ``checked_rules`` and on the violations, step), in the order they run.
SCHEMA_STEPS: tuple[tuple[str, SchemaStep], ...] = (
    ("required_columns", _check_required_columns),
    ("types", _check_types),
    ("not_null", _check_not_null),
    ("ranges", _check_ranges),
    ("finite", _check_finite),
    ("allowed_values", _check_allowed_values),
)


def check_columns(df: pd.DataFrame, columns: dict[str, Column]) -> list[Violation]:
    """The schema steps alone on a table that ``columns`` declares rather than a project's
    schema (e.g. an event source of the feature store)."""
    holder = ProjectSpec.model_construct(schema_=Schema.model_construct(columns=columns))
    ctx = _context(df, holder, None, datetime.now(UTC))
    return [v for _, step in SCHEMA_STEPS for v in step(ctx)]


# --- Rule checkers: one per ``rule:`` kind of the spec, looked up by the rule's tag. ---

Checker = Callable[[BatchContext, Any], list[Violation]]
RULE_CHECKERS: dict[str, Checker] = {}
_F = TypeVar("_F", bound=Callable[..., list[Violation]])


def _checks(rule_type: type) -> Callable[[_F], _F]:
    """Register the decorated function as the checker of a spec rule class (by its tag)."""
    (tag,) = get_args(rule_type.model_fields["rule"].annotation)

    def register(fn: _F) -> _F:
        if tag in RULE_CHECKERS:
            raise ValueError(f"rule {tag!r} already has a checker")
        RULE_CHECKERS[tag] = fn
        return fn

    return register


@_checks(MinRowsRule)
def _check_min_rows(ctx: BatchContext, rule: MinRowsRule) -> list[Violation]:
    rows = len(ctx.df)
    if rows >= rule.value:
        return []
    return [Violation("min_rows", f"{rows} rows, fewer than {rule.value}", severity=rule.severity)]


@_checks(MaxNullFractionRule)
def _check_max_null_fraction(ctx: BatchContext, rule: MaxNullFractionRule) -> list[Violation]:
    df, out = ctx.df, []
    for name in rule.columns or ctx.present:
        if name not in df or len(df) == 0:
            continue
        frac = float(df[name].isna().mean())
        if frac > rule.value:
            out.append(
                Violation(
                    "max_null_fraction",
                    f"null fraction {frac:.3f} above {rule.value}",
                    name,
                    int(df[name].isna().sum()),
                    severity=rule.severity,
                )
            )
    return out


@_checks(UniqueKeyRule)
def _check_unique_key(ctx: BatchContext, rule: UniqueKeyRule) -> list[Violation]:
    df, key = ctx.df, ctx.spec.schema.key
    if key not in df:
        return []
    dup = df[key][df[key].duplicated(keep=False)]
    if dup.empty:
        return []
    return [
        Violation(
            "unique_key",
            "duplicate keys",
            key,
            int(df[key].duplicated().sum()),
            sorted({str(v) for v in dup.unique()[:MAX_EXAMPLES]}),
            severity=rule.severity,
        )
    ]


@_checks(EventTimeNotInFutureRule)
def _check_event_time_not_in_future(
    ctx: BatchContext, rule: EventTimeNotInFutureRule
) -> list[Violation]:

    name = ctx.spec.schema.event_time
    if name not in ctx.df or not ctx.typed_ok(name):
        return []
    ts = parse_datetimes(ctx.df[name], ctx.spec.schema.columns[name])
    limit = ctx.now + timedelta(seconds=rule.tolerance_seconds)
    future = ts > limit
    if not future.any():
        return []
    return [
        Violation(
            "event_time_not_in_future",
            f"event times after {limit.isoformat()}",
            name,
            int(future.sum()),
            examples(ts[future]),
            severity=rule.severity,
        )
    ]


def _profile_batch(ctx: BatchContext) -> Any:
    """whylogs profile of the well-typed, non-key columns of the batch (a sample of it)."""
    key = ctx.spec.schema.key
    profiled = [c for c in ctx.present if ctx.typed_ok(c) and c != key]
    return profile(coerce(sample(ctx.df[profiled]), ctx.spec))


@_checks(DistributionRule)
def _check_distribution(ctx: BatchContext, rule: DistributionRule) -> list[Violation]:
    if ctx.previous_profile is None or len(ctx.df) == 0:
        return []
    wanted = rule.columns or ctx.spec.features
    columns = [c for c in wanted if c in ctx.df and ctx.typed_ok(c)]
    ctx.profile = _profile_batch(ctx)
    scores = drifted_columns(ctx.profile, ctx.previous_profile, p_value=rule.p_value)
    drifted = {c: s for c, s in scores.items() if c in columns and s["drift"]}
    if not columns or len(drifted) / len(columns) <= rule.max_drift_fraction:
        return []
    return [
        Violation(
            "distribution",
            f"{len(drifted)} of {len(columns)} columns drifted from the previous "
            f"accepted batch (limit {rule.max_drift_fraction:.0%})",
            count=len(drifted),
            examples=[f"{c} p={s['p_value']:.2g}" for c, s in drifted.items()][:MAX_EXAMPLES],
            severity=rule.severity,
        )
    ]


def check_batch(
    df: pd.DataFrame,
    spec: ProjectSpec,
    *,
    previous_profile: Any | None = None,
    now: datetime | None = None,
    provenance: bool = False,
) -> QualityReport:
    """Run the schema checks and every rule of the spec; collect all violations.

    ``provenance``: a batch of production rows, whose request id and row columns are
    expected beside the schema's."""
    ctx = _context(df, spec, previous_profile, now or datetime.now(UTC), provenance)
    violations: list[Violation] = []
    checked: list[str] = []
    for name, step in SCHEMA_STEPS:
        checked.append(name)
        violations += step(ctx)
    for rule in spec.rules:
        checked.append(rule.rule)
        violations += RULE_CHECKERS[rule.rule](ctx, rule)
    return QualityReport(
        project=spec.name,
        rows=len(df),
        columns=[str(c) for c in df.columns],
        violations=violations,
        checked_rules=checked,
        profile=ctx.profile,
    )
