"""Request schema of a project's prediction endpoint, generated from its spec.

Names, types, allowed values and ranges come from the spec, so a malformed request is
refused with an error naming each bad field, the same rules the ingestion gate applies.
An instance may also carry its own key and event time (the spec's ``schema.key`` and
``schema.event_time``): they are not model inputs, they pass through to the prediction log
so that labelled production rows keep their identity when continuous training folds them in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    create_model,
)

from mlops_lib.spec import EPOCH_FORMATS, Column, ProjectSpec

# Values a row may carry beyond the spec's own limits: integers that fit 64 bits, finite
# floats (no NaN or +-Infinity), strings up to MAX_TEXT characters.
INT64 = (-(2**63), 2**63 - 1)
MAX_TEXT = 1_000


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


def instance_model(spec: ProjectSpec) -> type[BaseModel]:
    """One row of features: every feature required (null allowed where nullable), the
    instance's key and event time optional, no extras."""
    fields: dict[str, Any] = {}
    for name in spec.features:
        col = spec.schema.columns[name]
        base = _field_type(col)
        limits = _limits(col)
        annotation = base | None if col.nullable else base
        fields[name] = (annotation, Field(..., description=col.description or None, **limits))
    for name in spec.identity:
        fields[name] = _pass_through_field(spec.schema.columns[name])
    return create_model(
        f"{spec.name.title().replace('_', '')}Instance",
        __config__=ConfigDict(extra="forbid", strict=True),
        **fields,
    )


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
