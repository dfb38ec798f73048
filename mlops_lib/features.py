"""Feature pipeline built from a project spec: the same fitted object trains and serves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sklearn.base import BaseEstimator, TransformerMixin

from mlops_lib.expressions import evaluate, float_values
from mlops_lib.quality import parse_datetimes
from mlops_lib.spec import Column, ProjectSpec, part_column

# One-hot columns per categorical feature at most; rarer values share one column.
MAX_ONEHOT_CATEGORIES = 50

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline


class DerivedFeatures(TransformerMixin, BaseEstimator):
    """Adds columns computed by derived-feature expressions (``name -> expression``), in
    order; see :mod:`mlops_lib.expressions` for the language (never Python code)."""

    def __init__(self, expressions: dict[str, str] | None = None):
        self.expressions = expressions

    def fit(self, X: pd.DataFrame, y: Any = None) -> DerivedFeatures:
        self.feature_names_in_ = [str(c) for c in X.columns]
        self.n_features_in_ = len(self.feature_names_in_)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        out = X.copy()
        for name, expr in (self.expressions or {}).items():
            out[name] = evaluate(expr, out)
        return out

    def get_feature_names_out(self, input_features=None):
        import numpy as np

        base = list(input_features) if input_features is not None else self.feature_names_in_
        return np.asarray([*base, *(self.expressions or {})], dtype=object)


class DatetimeParts(TransformerMixin, BaseEstimator):
    """Adds numeric columns ``<column>_<part>`` (e.g. ``signup_weekday``) taken from datetime
    features, as their spec's ``parts`` declare (weekday: Monday is 0)."""

    def __init__(self, parts: dict[str, list[str]] | None = None):
        self.parts = parts

    def fit(self, X: pd.DataFrame, y: Any = None) -> DatetimeParts:
        self.feature_names_in_ = [str(c) for c in X.columns]
        self.n_features_in_ = len(self.feature_names_in_)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        import pandas as pd

        out = X.copy()
        for name, parts in (self.parts or {}).items():
            values = pd.to_datetime(out[name], utc=True)
            for part in parts:
                out[part_column(name, part)] = _part(values, part)
        return out

    def get_feature_names_out(self, input_features=None):
        import numpy as np

        base = list(input_features) if input_features is not None else self.feature_names_in_
        return np.asarray([*base, *datetime_part_columns(self.parts or {})], dtype=object)


def _part(values: pd.Series, part: str) -> pd.Series:
    if part == "day_of_year":
        return values.dt.dayofyear.astype("float64")
    return getattr(values.dt, part).astype("float64")


def datetime_parts(spec: ProjectSpec) -> dict[str, list[str]]:
    """Datetime features with the parts the model takes from them."""
    columns = spec.schema.columns
    return {n: list(columns[n].parts) for n in spec.features if columns[n].parts}


def datetime_part_columns(parts: dict[str, list[str]]) -> list[str]:
    return [part_column(name, part) for name, names in parts.items() for part in names]


def column_groups(spec: ProjectSpec) -> tuple[list[str], list[str]]:
    """Numeric and categorical model inputs (derived features, datetime parts and the
    feature store's features are numeric; a datetime feature without parts is not a model
    input)."""
    numeric, categorical = datetime_part_columns(datetime_parts(spec)), []
    for name in spec.model_inputs:  # the request's features, then the feature store's
        kind = spec.input_column(name).type
        if kind in ("int", "float", "bool"):
            numeric.append(name)
        elif kind in ("string", "category"):
            categorical.append(name)
    return numeric + list(spec.training.derived), categorical


def build_pipeline(spec: ProjectSpec, estimator: Any) -> Pipeline:
    """Derived features -> impute/scale numbers, impute/encode categories -> estimator."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    numeric, categorical = column_groups(spec)
    if spec.training.encoding == "onehot":
        encoder = OneHotEncoder(
            handle_unknown="infrequent_if_exist",
            max_categories=MAX_ONEHOT_CATEGORIES,
            sparse_output=False,
        )
    else:
        encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    pre = ColumnTransformer(
        [
            (
                "num",
                Pipeline(
                    [
                        # An all-null column stays (as 0), not dropped: it may be the only one.
                        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                        ("scale", StandardScaler()),
                    ]
                ),
                numeric,
            ),
            (
                "cat",
                Pipeline(
                    [("impute", SimpleImputer(strategy="most_frequent")), ("encode", encoder)]
                ),
                categorical,
            ),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    return Pipeline(
        [
            ("dates", DatetimeParts(datetime_parts(spec))),
            ("derive", DerivedFeatures(dict(spec.training.derived))),
            ("pre", pre),
            ("model", estimator),
        ]
    )


def model_input(df: pd.DataFrame, spec: ProjectSpec) -> pd.DataFrame:
    """The raw model inputs the pipeline takes (as served), in spec order: the feature
    columns, then the feature store's (``spec.store_features``; one the frame lacks is
    missing on every row, see :func:`input_frame`)."""
    columns = {name: df[name] for name in spec.features}
    columns |= {name: df[name] for name in spec.store_features if name in df.columns}
    return input_frame(columns, spec, index=df.index)


def input_frame(columns: Mapping[str, Any], spec: ProjectSpec, index: Any = None) -> pd.DataFrame:
    """Model inputs as the pipeline takes them: numbers as float64, categories as objects
    with None for a gap, dates parsed as their column's format says. A column is a Series
    (a batch) or a list of validated values (a request: no pandas round trip per row).

    Every feature column must be there. A store feature (``<view>__<feature>``) that is not
    is missing (NaN) on every row, as for an entity the online store does not know: the
    pipeline imputes it. Without a feature store this is exactly the feature columns."""
    import pandas as pd

    data = {n: _input_column(columns[n], spec.schema.columns[n]) for n in spec.features}
    if spec.store_features:
        rows = len(index) if index is not None else _rows(columns, spec)
        for name in spec.store_features:
            values = columns[name] if name in columns else [None] * rows
            data[name] = _input_column(values, spec.input_column(name))
    return pd.DataFrame(data, index=index)


def _rows(columns: Mapping[str, Any], spec: ProjectSpec) -> int:
    present = [n for n in spec.model_inputs if n in columns]
    return len(columns[present[0]]) if present else 0


def _input_column(values: Any, col: Column) -> Any:
    import pandas as pd

    listed = isinstance(values, list)
    if col.type in ("int", "float"):
        if listed:
            return float_values(values)
        return pd.to_numeric(values).astype("float64")
    if col.type in ("string", "category"):
        if listed:  # an object Series: pandas would read an array of str as str, None as NaN
            return pd.Series(values, dtype=object)
        values = values.astype(object)
        return values.where(values.notna(), None)
    if col.type == "datetime":
        return parse_datetimes(pd.Series(values) if listed else values, col)
    return pd.Series(values) if listed else values


def model_target(df: pd.DataFrame, spec: ProjectSpec) -> pd.Series:
    """The labels as the model learns them, in plain NumPy types: a nullable boolean or
    integer column would reach scikit-learn as floats, and its classes as 0.0 and 1.0."""
    y = df[spec.target.column]
    if spec.target.task == "regression":
        return y.astype("float64")
    kind = spec.schema.columns[spec.target.column].type
    if kind in ("bool", "int"):
        return y.astype(bool if kind == "bool" else "int64")
    return y.astype(object) if kind in ("string", "category") else y
