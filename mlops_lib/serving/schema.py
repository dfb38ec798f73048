"""Request schema of a project's prediction endpoint, generated from its spec.

Names, types, allowed values and ranges come from the spec, so a malformed request is
refused with an error naming each bad field, the same rules the ingestion gate applies.
An instance may also carry its own key and event time (the spec's ``schema.key`` and
``schema.event_time``): they are not model inputs, they pass through to the prediction log
so that labelled production rows keep their identity when continuous training folds them in.

A model that takes features from the feature store (``spec.store_features``) needs the join
key of each entity whose views it takes: that key is REQUIRED in every row (not null), its
store features are looked up by it, and a request never sends them (a ``<view>__<feature>``
field is refused as an unknown one, naming it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    TypeAdapter,
    ValidationError,
    create_model,
)
from typing_extensions import TypedDict

from mlops_lib.feature_store.online import model_join_keys
from mlops_lib.spec import EPOCH_FORMATS, Column, ProjectSpec

# Values a row may carry beyond the spec's own limits: integers that fit 64 bits, finite
# floats (no NaN or +-Infinity), strings up to MAX_TEXT characters.
INT64 = (-(2**63), 2**63 - 1)
MAX_TEXT = 1_000
_KEY_MISSING = "join key missing: the model's store features are looked up by it"


def _field_type(col: Column) -> Any:
    if col.allowed:
        return Literal[tuple(col.allowed)]  # type: ignore[valid-type]
    if col.type == "int":
        # Strict: "5" or 5.5 is a wrong type, not something to coerce silently.
        return int
    if col.type == "float":
        return float
    if col.type == "bool":
        return StrictBool
    if col.type == "datetime" and col.format in EPOCH_FORMATS:
        return float  # seconds or milliseconds since the epoch
    if col.type == "datetime" and col.format:
        return Annotated[StrictStr, AfterValidator(_written_as(col.format))]
    return StrictStr


def _written_as(fmt: str) -> Any:
    """A check that a date is written in the column's format; the text is kept as sent."""

    def check(value: str) -> str:
        try:
            datetime.strptime(value, fmt)
        except ValueError:
            raise ValueError(f"{value!r} is not a date written as {fmt!r}") from None
        return value

    return check


def _limits(col: Column) -> dict[str, Any]:
    """Field constraints: the spec's range, then what any value of the type must respect."""
    limits: dict[str, Any] = {k: v for k, v in (("ge", col.min), ("le", col.max)) if v is not None}
    if col.allowed:
        return limits
    if col.type == "int":
        limits.setdefault("ge", INT64[0])
        limits.setdefault("le", INT64[1])
    elif col.type == "float" or col.format in EPOCH_FORMATS:
        limits["allow_inf_nan"] = False
    elif col.type in ("string", "category"):
        limits["max_length"] = MAX_TEXT
    return limits


def _pass_through_field(col: Column) -> tuple[Any, Any]:
    """Optional; typed like the column (a datetime as an ISO 8601 string)."""
    description = "passed through to the prediction log (not a model input)"
    if col.type == "datetime" and not col.format:
        return datetime | None, Field(None, strict=False, description=description)
    return _field_type(col) | None, Field(None, description=description, **_limits(col))


def _key_field(col: Column) -> tuple[Any, Any]:
    """A join key of the feature store: required, never null, typed like the column."""
    description = "the entity's key: the model's store features are looked up by it"
    return _field_type(col), Field(..., description=col.description or description, **_limits(col))


def required_columns(spec: ProjectSpec) -> list[str]:
    """What every row must carry: the features, then the feature store's join keys that
    are not features."""
    keys = model_join_keys(spec)
    return [*spec.features, *(k for k in keys if k not in spec.features)]


def _instance_fields(spec: ProjectSpec) -> dict[str, tuple[Any, Any]]:
    """``name -> (annotation, FieldInfo)`` of one row: every feature required (null allowed
    where nullable), the instance's key and event time optional; the join keys of a model
    with store features required and not null."""
    keys = model_join_keys(spec)
    fields: dict[str, Any] = {}
    for name in spec.features:
        col = spec.schema.columns[name]
        if name in keys:
            fields[name] = _key_field(col)
            continue
        base = _field_type(col)
        limits = _limits(col)
        annotation = base | None if col.nullable else base
        fields[name] = (annotation, Field(..., description=col.description or None, **limits))
    for name in spec.identity:
        col = spec.schema.columns[name]
        fields[name] = _key_field(col) if name in keys else _pass_through_field(col)
    for name in keys:
        if name not in fields:
            fields[name] = _key_field(spec.schema.columns[name])
    return fields


def _title(spec: ProjectSpec) -> str:
    return spec.name.title().replace("_", "")


def instance_model(spec: ProjectSpec) -> type[BaseModel]:
    """One row as a model (the rules of :func:`_instance_fields`), no extras."""
    return create_model(
        f"{_title(spec)}Instance",
        __config__=ConfigDict(extra="forbid", strict=True),
        **_instance_fields(spec),
    )


def instance_row(spec: ProjectSpec) -> Any:
    """The same row as a TypedDict: validated into a plain dict, no model per row (a
    1,000-row request validates about 3x faster); an absent key or event time is None
    (a join key of the feature store is never absent)."""
    fields = {}
    required = set(required_columns(spec))
    for name, (annotation, info) in _instance_fields(spec).items():
        field = Annotated[annotation, info]
        fields[name] = field if name in required else NotRequired[field]
    row = TypedDict(f"{_title(spec)}Row", fields)  # type: ignore[misc]
    row.__pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[attr-defined]
    return row


def request_model(spec: ProjectSpec) -> type[BaseModel]:
    """``{"instances": [row, ...]}`` with 1..serving.max_batch_size rows."""
    instance = instance_model(spec)
    return create_model(
        f"{spec.name.title().replace('_', '')}PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        instances=(
            list[instance],  # type: ignore[valid-type]
            Field(..., min_length=1, max_length=spec.serving.max_batch_size),
        ),
    )


# The columnar form ------------------------------------------------------------------------
# ``{"columns": [name, ...], "data": [[value, ...], ...]}``: the same rules, checked a column
# at a time (one validation call per column rather than one model per row).


class ColumnarError(ValueError):
    """Bad columnar request; ``errors`` are pydantic-style ``{"loc", "msg", "type"}``."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__(f"{len(errors)} problem(s) in the request")
        self.errors = errors


def column_adapters(spec: ProjectSpec) -> dict[str, TypeAdapter]:
    """A validator per column a columnar request may send, from the rules of a row
    (:func:`_instance_fields`): every feature, the instance's key and event time, the
    feature store's join keys."""
    strict = ConfigDict(strict=True)
    return {
        name: TypeAdapter(list[Annotated[annotation, info]], config=strict)  # type: ignore[valid-type]
        for name, (annotation, info) in _instance_fields(spec).items()
    }


def validate_columns(
    spec: ProjectSpec,
    adapters: dict[str, TypeAdapter],
    columns: list[str],
    data: list[list[Any]],
) -> dict[str, list[Any]]:
    """The request's values by column, validated; raises ``ColumnarError`` naming every
    bad column, row and field (``["data", row, column]``)."""
    if not data:
        raise ColumnarError([_error(["data"], "no rows", "too_short")])
    errors = _header_errors(spec, adapters, columns)
    errors += [
        _error(["data", i], f"has {len(row)} values for {len(columns)} columns", "row_length")
        for i, row in enumerate(data)
        if len(row) != len(columns)
    ]
    if errors:
        raise ColumnarError(errors)
    values = dict(zip(columns, map(list, zip(*data, strict=True)), strict=True))
    out: dict[str, list[Any]] = {}
    for name, column in values.items():
        try:
            out[name] = adapters[name].validate_python(column)
        except ValidationError as exc:
            errors += [
                _error(["data", e["loc"][0], name, *e["loc"][1:]], e["msg"], e["type"])
                for e in exc.errors(include_url=False)
            ]
    if errors:
        raise ColumnarError(errors)
    for name in adapters:  # the optional ones, as the row form gives them: absent is None
        out.setdefault(name, [None] * len(data))
    return out


def _header_errors(
    spec: ProjectSpec, adapters: dict[str, TypeAdapter], columns: list[str]
) -> list[dict[str, Any]]:
    store = set(spec.store_features)
    errors = [
        _error(
            ["columns", i],
            f"{name!r} comes from the feature store: do not send it"
            if name in store
            else f"unknown column {name!r}",
            "extra_forbidden",
        )
        for i, name in enumerate(columns)
        if name not in adapters
    ]
    errors += [
        _error(["columns", name], "column sent more than once", "duplicate")
        for name in sorted({n for n in columns if columns.count(n) > 1})
    ]
    features = set(spec.features)
    errors += [
        _error(
            ["columns", name],
            "feature missing" if name in features else _KEY_MISSING,
            "missing",
        )
        for name in required_columns(spec)
        if name not in columns
    ]
    return errors


def _error(loc: list[Any], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}
