"""Derived-feature expressions: a small arithmetic language over columns, never code.

A spec's ``training.derived`` maps a feature name to an expression such as
``total_charges / (tenure_months + 1)``. It is parsed once with Python's ``ast`` and only an
allow-list of nodes is accepted: column names, numbers, ``True``/``False``, arithmetic
(``+ - * / // % **``, unary ``-``/``+``), comparisons, element-wise ``&``, ``|``, ``~``,
``and``, ``or``, ``not`` and calls of the functions in :data:`FUNCTIONS`. Anything else
(attributes, subscripts, strings, lambdas, keywords, unknown names) is refused with the
offending part, so an expression cannot reach Python objects; evaluation walks the checked
tree with numpy.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# Operators and functions by the name of the numpy function that evaluates them: checking
# a spec needs no numpy (DAG parsing stays light); evaluation looks them up in numpy.
FUNCTIONS: dict[str, tuple[str, int]] = {
    # name in expressions: (numpy function, number of arguments)
    "abs": ("abs", 1),
    "log": ("log", 1),
    "log1p": ("log1p", 1),
    "exp": ("exp", 1),
    "sqrt": ("sqrt", 1),
    "floor": ("floor", 1),
    "ceil": ("ceil", 1),
    "clip": ("clip", 3),
    "where": ("where", 3),
    "minimum": ("minimum", 2),
    "maximum": ("maximum", 2),
}
_BINARY: dict[type, str] = {
    ast.Add: "add",
    ast.Sub: "subtract",
    ast.Mult: "multiply",
    ast.Div: "true_divide",
    ast.FloorDiv: "floor_divide",
    ast.Mod: "mod",
    ast.Pow: "power",
    ast.BitAnd: "logical_and",
    ast.BitOr: "logical_or",
}
_UNARY: dict[type, str] = {
    ast.USub: "negative",
    ast.UAdd: "positive",
    ast.Invert: "logical_not",
    ast.Not: "logical_not",
}
_BOOL: dict[type, str] = {ast.And: "logical_and", ast.Or: "logical_or"}
_COMPARE: dict[type, str] = {
    ast.Lt: "less",
    ast.LtE: "less_equal",
    ast.Gt: "greater",
    ast.GtE: "greater_equal",
    ast.Eq: "equal",
    ast.NotEq: "not_equal",
}


class ExpressionError(ValueError):
    """An expression outside the allowed language; the message names the offending part."""


def _part(node: ast.AST, source: str) -> str:
    return ast.get_source_segment(source, node) or type(node).__name__


def _check(node: ast.AST, columns: frozenset[str], source: str) -> None:
    """Raise ExpressionError unless every node of the tree is allowed."""
    if isinstance(node, ast.Expression):
        return _check(node.body, columns, source)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool | int | float):
            return None
        raise ExpressionError(f"only numbers are allowed as constants, not {_part(node, source)}")
    if isinstance(node, ast.Name):
        if node.id in columns:
            return None
        raise ExpressionError(f"unknown column {node.id!r}")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        _check(node.left, columns, source)
        return _check(node.right, columns, source)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _check(node.operand, columns, source)
    if isinstance(node, ast.BoolOp):
        for child in node.values:
            _check(child, columns, source)
        return None
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        for child in (node.left, *node.comparators):
            _check(child, columns, source)
        return None
    if isinstance(node, ast.Call):
        return _check_call(node, columns, source)
    raise ExpressionError(f"{_part(node, source)!r} is not allowed ({type(node).__name__})")


def _check_call(node: ast.Call, columns: frozenset[str], source: str) -> None:
    name = node.func.id if isinstance(node.func, ast.Name) else None
    if name not in FUNCTIONS:
        raise ExpressionError(
            f"{_part(node.func, source)!r} is not an allowed function "
            f"(allowed: {', '.join(sorted(FUNCTIONS))})"
        )
    arity = FUNCTIONS[name][1]
    if node.keywords or len(node.args) != arity:
        raise ExpressionError(f"{name}() takes {arity} positional argument(s)")
    for arg in node.args:
        _check(arg, columns, source)


@lru_cache(maxsize=256)
def parse(source: str, columns: frozenset[str]) -> ast.Expression:
    """The checked tree of an expression over ``columns``; raises ExpressionError."""
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"not a valid expression: {exc.msg}") from None
    _check(tree, columns, source.strip())
    return tree


def _eval(node: ast.AST, values: Mapping[str, Any]) -> Any:
    import numpy as np  # heavy: kept out of spec validation and DAG parsing

    if isinstance(node, ast.Expression):
        return _eval(node.body, values)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.BinOp):
        op = getattr(np, _BINARY[type(node.op)])
        return op(_eval(node.left, values), _eval(node.right, values))
    if isinstance(node, ast.UnaryOp):
        return getattr(np, _UNARY[type(node.op)])(_eval(node.operand, values))
    if isinstance(node, ast.BoolOp):
        op = getattr(np, _BOOL[type(node.op)])
        result = _eval(node.values[0], values)
        for child in node.values[1:]:
            result = op(result, _eval(child, values))
        return result
    if isinstance(node, ast.Compare):
        left, result = _eval(node.left, values), True
        for op_node, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, values)
            result = np.logical_and(result, getattr(np, _COMPARE[type(op_node)])(left, right))
            left = right
        return result
    if isinstance(node, ast.Call):
        func = getattr(np, FUNCTIONS[node.func.id][0])  # type: ignore[attr-defined]
        return func(*(_eval(a, values) for a in node.args))
    raise ExpressionError(f"cannot evaluate {type(node).__name__}")  # unreachable if checked


def names(tree: ast.AST) -> set[str]:
    """The column names an expression reads."""
    calls = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in calls}


def _numbers(column: Any) -> np.ndarray:
    """A column as numbers: numeric and boolean ones as float64 (missing -> NaN)."""
    import numpy as np  # heavy: kept out of spec validation and DAG parsing
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return column.to_numpy(dtype="float64", na_value=np.nan)
    values = column.to_numpy()
    if all(v is None or isinstance(v, bool | int | float) for v in values):
        return float_values(values)  # e.g. a bool column with a gap, held as objects
    return values


def float_values(values: Any) -> np.ndarray:
    """Numbers, bools and gaps (None) as float64 with NaN for a gap: the one rule by which
    request values become numbers, on the frame path and on the graph's column path alike."""
    import numpy as np  # heavy: kept out of spec validation and DAG parsing

    return np.array([np.nan if v is None else v for v in values], dtype="float64")


def evaluate(source: str, frame: Any) -> np.ndarray:
    """The expression over a frame's columns, as a float64 array of the frame's length."""
    import numpy as np  # heavy: kept out of spec validation and DAG parsing

    tree = parse(source, frozenset(str(c) for c in frame.columns))
    values = {name: _numbers(frame[name]) for name in names(tree)}
    out = np.asarray(_eval(tree, values), dtype="float64")
    return np.full(len(frame), float(out)) if out.ndim == 0 else out


def evaluate_arrays(source: str, arrays: Mapping[str, np.ndarray], length: int) -> np.ndarray:
    """The expression over float64 arrays by column name (no frame), as in :func:`evaluate`."""
    import numpy as np  # heavy: kept out of spec validation and DAG parsing

    tree = parse(source, frozenset(arrays))
    out = np.asarray(_eval(tree, arrays), dtype="float64")
    return np.full(length, float(out)) if out.ndim == 0 else out
