"""A spec never runs code: derived features are a checked arithmetic language."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops_lib import demo_data
from mlops_lib.expressions import ExpressionError, evaluate, parse
from mlops_lib.features import DerivedFeatures, model_input
from mlops_lib.spec import SpecError, parse_spec

from .specs import churn_spec

REPO = Path(__file__).resolve().parents[2]
CHURN = REPO / "projects" / "churn.yaml"
COLUMNS = frozenset({"total_charges", "tenure_months", "support_calls", "monthly_charges"})

# What an attacker writes into a spec: each reaches Python objects through the expression.
HOSTILE = {
    "globals via a column": "total_charges.__init__.__globals__['os'].system('id')",
    "import": "__import__('os').system('id')",
    "builtin eval": "eval('1')",
    "attribute": "tenure_months.values",
    "subscript": "tenure_months[0]",
    "string constant": "'a' + 'b'",
    "lambda": "(lambda: 1)()",
    "comprehension": "[c for c in tenure_months]",
    "keyword argument": "clip(tenure_months, 0, upper=3)",
    "walrus": "(x := tenure_months)",
    "conditional": "1 if tenure_months else 0",
    "statement": "import os",
    "unknown column": "salary * 2",
    "dunder name": "__builtins__",
}


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_expressions_are_refused(source: str) -> None:
    with pytest.raises(ExpressionError):
        parse(source, COLUMNS)


def test_a_refused_expression_is_a_spec_error_naming_the_key_and_the_part() -> None:
    data = yaml.safe_load(CHURN.read_text())
    data["training"]["derived"] = {
        "ok": "total_charges / (tenure_months + 1)",
        "evil": "total_charges.__init__.__globals__['os'].system('id')",
        "typo": "support_callz * 2",
    }
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    problems = err.value.problems
    assert len(problems) == 2, problems
    assert problems[0].startswith("training.derived.evil: ")
    assert "__globals__" in problems[0] and "is not an allowed function" in problems[0]
    assert problems[1].startswith("training.derived.typo: unknown column 'support_callz'")


def test_a_derived_feature_may_use_the_ones_before_it_but_not_shadow_a_column() -> None:
    data = yaml.safe_load(CHURN.read_text())
    data["training"]["derived"] = {"a": "tenure_months + 1", "b": "a * 2"}
    assert list(parse_spec(data).training.derived) == ["a", "b"]
    data["training"]["derived"] = {"tenure_months": "support_calls + 1"}
    with pytest.raises(SpecError, match=r"training\.derived\.tenure_months: the name is already"):
        parse_spec(data)


def test_functions_take_their_number_of_arguments() -> None:
    with pytest.raises(ExpressionError, match=r"clip\(\) takes 3"):
        parse("clip(tenure_months, 0)", COLUMNS)
    with pytest.raises(ExpressionError, match="not an allowed function"):
        parse("open(tenure_months)", COLUMNS)


@pytest.mark.parametrize(
    "source",
    [
        "total_charges / (tenure_months + 1)",
        "support_calls * 12 / (tenure_months + 1)",
        "-monthly_charges ** 2 + tenure_months // 7 - support_calls % 3",
        "(tenure_months > 12) & (support_calls <= 2) | (monthly_charges == 0)",
        "~(tenure_months > 12)",
        "abs(monthly_charges - 50) + sqrt(tenure_months) + log(total_charges + 1)",
        "exp(-tenure_months / 100) + log1p(support_calls)",
    ],
)
def test_allowed_expressions_match_pandas_eval(source: str) -> None:
    frame = model_input(demo_data.generate("clean", rows=500, seed=5), churn_spec())
    expected = frame.eval(source, engine="python").astype("float64").to_numpy()
    np.testing.assert_allclose(evaluate(source, frame), expected, equal_nan=True)


def test_functions_beyond_pandas_eval_work_on_columns() -> None:
    frame = pd.DataFrame({"a": [-2.0, 0.5, 3.0, np.nan], "b": [1.0, 1.0, 1.0, 1.0]})
    assert evaluate("clip(a, 0, 1)", frame).tolist()[:3] == [0.0, 0.5, 1.0]
    assert evaluate("where(a > 0, a, b)", frame).tolist()[:3] == [1.0, 0.5, 3.0]
    assert evaluate("maximum(a, b)", frame).tolist()[:3] == [1.0, 1.0, 3.0]
    assert np.isnan(evaluate("a + b", frame)[3])
    assert evaluate("2", frame).tolist() == [2.0] * 4


def test_the_pipeline_derives_the_demo_features_without_pandas_eval() -> None:
    spec = churn_spec()
    frame = model_input(demo_data.generate("clean", rows=300, seed=6), spec)
    derived = DerivedFeatures(dict(spec.training.derived)).fit(frame).transform(frame)
    for name, source in spec.training.derived.items():
        want = frame.eval(source, engine="python").astype("float64")
        np.testing.assert_allclose(derived[name].to_numpy(), want.to_numpy())


def test_no_platform_code_evaluates_text() -> None:
    """Nothing in mlops_lib, the DAGs, plugins or Bentos calls eval/exec/compile or
    DataFrame.eval/query: spec and conf text is data."""
    offending = []
    for folder in ("mlops_lib", "dags", "plugins", "bentos"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.id if isinstance(func, ast.Name) else None
                attr = func.attr if isinstance(func, ast.Attribute) else None
                if name in ("eval", "exec", "compile", "__import__") or attr in (
                    "eval",
                    "query",
                ):
                    offending.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offending, offending
