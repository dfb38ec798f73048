"""Data quality gate: the spec's schema and rules checked on one batch, all at once."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mlops_lib.spec import ProjectSpec

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


def _examples(values: pd.Series) -> list[Any]:
    out = []
    for v in values.head(MAX_EXAMPLES).tolist():
        if hasattr(v, "isoformat"):
            v = v.isoformat()
        elif isinstance(v, float) and v != v:
            v = None
        out.append(v)
    return out


def _type_ok(series: pd.Series, declared: str) -> tuple[bool, pd.Series | None]:
    """Whether a column holds the declared type; returns bad values when it does not."""
    import pandas as pd
    from pandas.api import types as pt

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
        parsed = pd.to_datetime(non_null, errors="coerce", utc=True, format="mixed")
        bad = non_null[parsed.isna()]
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
            out[name] = pd.to_datetime(s, utc=True, format="mixed")
        elif col.type == "int":
            out[name] = pd.to_numeric(s).astype("Int64" if s.isna().any() else "int64")
        elif col.type == "float":
            out[name] = pd.to_numeric(s).astype("float64")
        elif col.type in ("string", "category"):
            out[name] = s.astype("string")
        elif col.type == "bool":
            out[name] = s.astype("boolean")
    return out


def check_batch(
    df: pd.DataFrame,
    spec: ProjectSpec,
    *,
    previous_profile: Any | None = None,
    now: datetime | None = None,
) -> QualityReport:
    """Run the schema checks and every rule of the spec; collect all violations."""
    import pandas as pd

    now = now or datetime.now(UTC)
    violations: list[Violation] = []
    checked: list[str] = []
    schema = spec.schema
    present = [c for c in schema.columns if c in df.columns]

    checked.append("required_columns")
    missing = [c for c in schema.columns if c not in df.columns]
    for name in missing:
        violations.append(Violation("required_columns", "column is missing", column=name))
    extra = [c for c in df.columns if c not in schema.columns]
    if extra:
        violations.append(
            Violation(
                "required_columns",
                f"unexpected columns {extra} (renamed?)",
                severity="warning",
                examples=extra[:MAX_EXAMPLES],
            )
        )

    checked.append("types")
    typed_ok: dict[str, bool] = {}
    for name in present:
        ok, bad = _type_ok(df[name], schema.columns[name].type)
        typed_ok[name] = ok
        if not ok:
            violations.append(
                Violation(
                    "types",
                    f"expected {schema.columns[name].type}, found {df[name].dtype}",
                    column=name,
                    count=len(bad) if bad is not None else 0,
                    examples=_examples(bad) if bad is not None else [],
                )
            )

    checked.append("not_null")
    for name in present:
        if not schema.columns[name].nullable:
            nulls = int(df[name].isna().sum())
            if nulls:
                violations.append(
                    Violation("not_null", "nulls in a non-nullable column", name, nulls)
                )

    checked.append("ranges")
    for name in present:
        col = schema.columns[name]
        if (col.min is None and col.max is None) or not typed_ok.get(name):
            continue
        values = pd.to_numeric(df[name], errors="coerce")
        mask = pd.Series(False, index=df.index)
        if col.min is not None:
            mask |= values < col.min
        if col.max is not None:
            mask |= values > col.max
        if mask.any():
            violations.append(
                Violation(
                    "ranges",
                    f"values outside [{col.min}, {col.max}]",
                    name,
                    int(mask.sum()),
                    _examples(df.loc[mask, name]),
                )
            )

    checked.append("allowed_values")
    for name in present:
        col = schema.columns[name]
        if not col.allowed or not typed_ok.get(name):
            continue
        s = df[name].dropna()
        bad = s[~s.isin(col.allowed)]
        if not bad.empty:
            violations.append(
                Violation(
                    "allowed_values",
                    f"values not in {col.allowed}",
                    name,
                    len(bad),
                    sorted({str(v) for v in bad.unique()[:MAX_EXAMPLES]}),
                )
            )

    current = None
    for rule in spec.rules:
        checked.append(rule.rule)
        sev = rule.severity
        if rule.rule == "min_rows":
            if len(df) < rule.value:
                violations.append(
                    Violation("min_rows", f"{len(df)} rows, fewer than {rule.value}", severity=sev)
                )
        elif rule.rule == "max_null_fraction":
            for name in rule.columns or present:
                if name not in df or len(df) == 0:
                    continue
                frac = float(df[name].isna().mean())
                if frac > rule.value:
                    violations.append(
                        Violation(
                            "max_null_fraction",
                            f"null fraction {frac:.3f} above {rule.value}",
                            name,
                            int(df[name].isna().sum()),
                            severity=sev,
                        )
                    )
        elif rule.rule == "unique_key":
            key = schema.key
            if key in df:
                dup = df[key][df[key].duplicated(keep=False)]
                if not dup.empty:
                    violations.append(
                        Violation(
                            "unique_key",
                            "duplicate keys",
                            key,
                            int(df[key].duplicated().sum()),
                            sorted({str(v) for v in dup.unique()[:MAX_EXAMPLES]}),
                            severity=sev,
                        )
                    )
        elif rule.rule == "event_time_not_in_future":
            name = schema.event_time
            if name in df and typed_ok.get(name):
                ts = pd.to_datetime(df[name], utc=True, format="mixed")
                limit = now + timedelta(seconds=rule.tolerance_seconds)
                future = ts > limit
                if future.any():
                    violations.append(
                        Violation(
                            "event_time_not_in_future",
                            f"event times after {limit.isoformat()}",
                            name,
                            int(future.sum()),
                            _examples(ts[future]),
                            severity=sev,
                        )
                    )
        elif rule.rule == "distribution":
            if previous_profile is None or len(df) == 0:
                continue
            from mlops_lib.profiles import drifted_columns, profile, sample

            columns = [c for c in (rule.columns or spec.features) if c in df and typed_ok.get(c)]
            profiled = [c for c in present if typed_ok.get(c) and c != schema.key]
            current = profile(coerce(sample(df[profiled]), spec))
            scores = drifted_columns(current, previous_profile, p_value=rule.p_value)
            scores = {c: s for c, s in scores.items() if c in columns}
            drifted = {c: s for c, s in scores.items() if s["drift"]}
            if columns and len(drifted) / len(columns) > rule.max_drift_fraction:
                violations.append(
                    Violation(
                        "distribution",
                        f"{len(drifted)} of {len(columns)} columns drifted from the previous "
                        f"accepted batch (limit {rule.max_drift_fraction:.0%})",
                        count=len(drifted),
                        examples=[f"{c} p={s['p_value']:.2g}" for c, s in drifted.items()][
                            :MAX_EXAMPLES
                        ],
                        severity=sev,
                    )
                )
    return QualityReport(
        project=spec.name,
        rows=len(df),
        columns=[str(c) for c in df.columns],
        violations=violations,
        checked_rules=checked,
        profile=current,
    )
