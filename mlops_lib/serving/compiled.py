"""The compiled scoring path: a fitted pipeline's preprocessing and model as an ONNX graph.

This room owns the conversion of ``pipeline[2:]`` (the column transformer and the
estimator) to ONNX, the parity check that decides whether the graph may serve, and the
scorer that runs it. The pipeline's pandas steps (datetime parts, derived features) stay
in pandas and run before the graph. A pipeline that does not convert, or whose graph does
not score like scikit-learn on the sample, keeps serving through scikit-learn: the result
says which runtime serves and why.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mlops_lib.expressions import ExpressionError, evaluate_arrays, float_values, parse

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# Missing categorical values as the graph sees them (strings cannot be NaN): NaN, which
# the pipeline's imputer fills, and None, which it leaves to the encoder as a category.
MISSING = "\x00missing"
NONE = "\x00none"
PARITY_TOLERANCE = 1e-5
ONNX_FILE = "model.onnx"
TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}
# Estimators that score in float32 in scikit-learn, and HistGradientBoosting, whose ONNX
# tree ensemble takes float32: the graph casts before them (parity is checked all the same).
FLOAT32_ESTIMATORS = (
    "RandomForestClassifier",
    "RandomForestRegressor",
    "ExtraTreesClassifier",
    "ExtraTreesRegressor",
    "DecisionTreeClassifier",
    "DecisionTreeRegressor",
    "ExtraTreeClassifier",
    "ExtraTreeRegressor",
    "GradientBoostingClassifier",
    "GradientBoostingRegressor",
    "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor",
)


@dataclass(frozen=True)
class Compiled:
    """Which runtime serves a pipeline, and why."""

    runtime: Literal["onnx", "sklearn"]
    reason: str  # why sklearn serves ("" when onnx)
    onnx: bytes | None  # the graph when runtime == "onnx"
    max_abs_diff: float | None  # parity figure over the checked rows (None if not converted)
    rows: int  # rows the parity check used


def compile_pipeline(
    pipeline: Any,
    sample: pd.DataFrame,
    tolerance: float = PARITY_TOLERANCE,
    requests: Mapping[str, Sequence[Any]] | None = None,
) -> Compiled:
    """Convert ``pipeline[2:]`` to ONNX and check parity on ``sample`` (a model_input frame,
    e.g. holdout rows), scored through :class:`OnnxScorer`, what serves; ``requests``, the
    same rows as validated request columns, are checked too where the graph takes them
    (the service's path). Classification: the same class for every row (a tie within
    tolerance may go either way) and probabilities within ``tolerance``; regression:
    ``|onnx - sklearn| <= tolerance * max(1, |sklearn|)``. A conversion or runtime error, a
    parity miss or an empty sample gives runtime "sklearn" with a one-line reason."""
    name = type(pipeline[-1]).__name__
    if len(sample) == 0:
        return _fallback("parity: no rows to check the graph on", 0)
    try:
        graph = _to_onnx(pipeline)
    except Exception as exc:  # any converter failure: sklearn serves
        return _fallback(f"skl2onnx cannot convert {name}: {_cause(exc)}", len(sample))
    try:
        scored = _graph_scores(OnnxScorer(graph, pipeline), sample, requests)
    except Exception as exc:  # a graph that does not run never serves
        return _fallback(f"onnxruntime cannot score {name}: {_cause(exc)}", len(sample))
    worst = 0.0
    for path, got in scored.items():
        miss, diff = _parity_miss(pipeline, sample, got, tolerance)
        worst = max(worst, diff)
        if miss:
            return Compiled("sklearn", f"parity{path}: {miss}", None, diff, len(sample))
    return Compiled("onnx", "", graph, worst, len(sample))


def _graph_scores(
    scorer: OnnxScorer, sample: pd.DataFrame, requests: Mapping[str, Sequence[Any]] | None
) -> dict[str, np.ndarray]:
    """The graph's scores of the sample by each path that serves ("" for the frame)."""
    scored = {"": scorer.scores(sample)}
    if requests is not None and scorer.takes_columns:
        scored[" (request columns)"] = scorer.scores_columns(requests)
    return scored


def _fallback(reason: str, rows: int) -> Compiled:
    return Compiled("sklearn", reason, None, None, rows)


def _cause(exc: Exception) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:200]}"


def _parity_miss(
    pipeline: Any, sample: pd.DataFrame, got: np.ndarray, tolerance: float
) -> tuple[str, float]:
    """What differs between the graph's scores and scikit-learn's ("" if nothing)."""
    import numpy as np

    classify = _is_classifier(pipeline)
    want = pipeline.predict_proba(sample) if classify else pipeline.predict(sample)
    want = np.asarray(want, dtype="float64")
    diff = float(np.max(np.abs(got - want), initial=0.0)) if got.shape == want.shape else np.inf
    return parity_problem(got, want, classify, tolerance), diff


def parity_problem(got: np.ndarray, want: np.ndarray, classify: bool, tolerance: float) -> str:
    """The parity rule, for the compile step and the deploy smoke test alike: what differs
    between scores and the pipeline's ("" if nothing). Classification: probabilities within
    ``tolerance`` and the same class for every row (a tie within tolerance may go either
    way); regression: ``|got - want| <= tolerance * max(1, |want|)``. NaN never matches."""
    import numpy as np

    rows = len(want)
    if got.shape != want.shape:
        return f"{got.shape} scores for {want.shape} expected"
    err = np.abs(got - want)
    diff = float(np.max(err, initial=0.0))
    missing = np.isnan(err).reshape(rows, -1).any(axis=1)
    if missing.any():
        return f"{int(missing.sum())} of {rows} rows have no score"
    if not classify:
        if np.any(err > tolerance * np.maximum(1.0, np.abs(want))):
            return _differ("predictions", diff, tolerance, rows)
        return ""
    if diff > tolerance:
        return _differ("probabilities", diff, tolerance, rows)
    top = np.sort(want, axis=1)[:, -2:]
    tie = (top[:, -1] - top[:, 0]) <= tolerance
    flipped = int(np.sum((got.argmax(axis=1) != want.argmax(axis=1)) & ~tie))
    if flipped:
        return f"the class differs on {flipped} of {rows} rows"
    return ""


def _differ(what: str, diff: float, tolerance: float, rows: int) -> str:
    return f"{what} differ by up to {diff:.1e} (tolerance {tolerance:.0e}) on {rows} rows"


def _is_classifier(pipeline: Any) -> bool:
    from sklearn.base import is_classifier

    return is_classifier(pipeline[-1])


def _to_onnx(pipeline: Any) -> bytes:
    """The ONNX graph of ``pipeline[2:]``: one input per column of the fitted column
    transformer (numbers as double, categories as strings, see :meth:`OnnxScorer.feed`)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    _tree_nodes_as_ints()
    numeric, categorical = _input_columns(pipeline)
    inputs = [(c, DoubleTensorType([None, 1])) for c in numeric]
    inputs += [(c, StringTensorType([None, 1])) for c in categorical]
    model = _convertible(pipeline)
    options = {id(model[-1]): {"zipmap": False}} if _is_classifier(pipeline) else None
    graph = convert_sklearn(model, initial_types=inputs, target_opset=TARGET_OPSET, options=options)
    return graph.SerializeToString()


def _tree_nodes_as_ints() -> None:
    """skl2onnx 1.20 gives HistGradientBoosting's leaves ``missing = False``, a Python bool
    where ONNX's ``nodes_missing_value_tracks_true`` wants an int, which protobuf 5+ refuses
    ("Expected an int, got a boolean"): its node builder is wrapped once to pass an int."""
    from skl2onnx.common import tree_ensemble

    build = tree_ensemble.add_node
    if getattr(build, "mlops_ints", False):
        return

    def add_node(*args: Any, nodes_missing_value_tracks_true: Any = 0, **kwargs: Any) -> Any:
        tracks = int(nodes_missing_value_tracks_true)
        return build(*args, nodes_missing_value_tracks_true=tracks, **kwargs)

    add_node.mlops_ints = True  # type: ignore[attr-defined]
    tree_ensemble.add_node = add_node


def _input_columns(pipeline: Any) -> tuple[list[str], list[str]]:
    """Numeric and categorical columns the fitted column transformer reads."""
    groups: dict[str, list[str]] = {"num": [], "cat": []}
    for name, _, columns in pipeline[2].transformers_:
        if name in groups:
            groups[name] = [str(c) for c in columns]
    return groups["num"], groups["cat"]


def _convertible(pipeline: Any) -> Any:
    """A copy of ``pipeline[2:]`` the converters take, scoring as the original does:
    numeric NaN filled in double precision, categories as strings (see :func:`_strings`),
    a float32 cast before tree ensembles, class labels as 0..k-1 (only probabilities are
    read)."""
    import numpy as np
    from skl2onnx.sklapi import CastTransformer
    from sklearn.pipeline import Pipeline

    pre, model = copy.deepcopy(pipeline[2]), copy.deepcopy(pipeline[-1])
    for name, branch, columns in pre.transformers_:
        if name == "num" and len(columns):
            branch.steps[0] = ("impute", _nan_fill()(branch.steps[0][1].statistics_))
        elif name == "cat" and len(columns):
            branch.steps[0] = ("impute", _string_imputer(branch.steps[0][1]))
            _string_encoder(branch.steps[-1][1], columns)
    if hasattr(model, "classes_"):
        model.classes_ = np.arange(len(model.classes_))
    steps = [("pre", pre), ("model", model)]
    if type(model).__name__ in FLOAT32_ESTIMATORS:
        steps.insert(1, ("cast", CastTransformer(dtype=np.float32)))
    return Pipeline(steps)


def _string_imputer(fitted: Any) -> Any:
    """The fitted categorical imputer, taking :data:`MISSING` as its missing value."""
    from sklearn.impute import SimpleImputer

    imputer = SimpleImputer(missing_values=MISSING, strategy="most_frequent")
    for attr in ("statistics_", "n_features_in_", "_fit_dtype", "_fill_dtype"):
        if hasattr(fitted, attr):
            setattr(imputer, attr, getattr(fitted, attr))
    imputer.statistics_ = _none_as_string(imputer.statistics_)
    return imputer


def _string_encoder(encoder: Any, columns: list[str]) -> None:
    """Make the copied encoder's categories strings; one-hot: an unseen value is all zeros
    when no infrequent categories exist (scikit-learn's ``infrequent_if_exist`` then acts
    as ``ignore``), and infrequent categories, which skl2onnx cannot convert after an
    imputer, are refused."""
    encoder.categories_ = [_none_as_string(c) for c in encoder.categories_]
    if type(encoder).__name__ != "OneHotEncoder":
        return
    infrequent = [c for c, cats in zip(columns, _infrequent(encoder), strict=True) if cats]
    if infrequent:
        raise NotImplementedError(
            f"OneHotEncoder groups infrequent categories of {', '.join(map(repr, infrequent))} "
            f"(over {encoder.max_categories} values), which skl2onnx does not convert"
        )
    if encoder.handle_unknown == "infrequent_if_exist":
        encoder.handle_unknown = "ignore"


def _infrequent(encoder: Any) -> list[bool]:
    found = getattr(encoder, "infrequent_categories_", None) or [None] * len(encoder.categories_)
    return [c is not None and len(c) > 0 for c in found]


def _none_as_string(values: np.ndarray) -> np.ndarray:
    """None, a category to scikit-learn's encoders (its imputer fills NaN only), as
    :data:`NONE`, what the graph is fed for it."""
    out = values.copy()
    out[[v is None for v in values]] = NONE
    return out


@functools.cache
def _nan_fill() -> type:
    """NaN -> the fitted statistic, per column, in the input's precision: the graph's
    stand-in for the numeric SimpleImputer (onnxruntime's Imputer is float32 only). Made
    and registered with skl2onnx once, on first use, to keep scikit-learn out of import."""
    from skl2onnx import update_registered_converter
    from sklearn.base import BaseEstimator, TransformerMixin

    class NanFill(TransformerMixin, BaseEstimator):
        def __init__(self, statistics: np.ndarray | None = None):
            self.statistics = statistics

        def fit(self, X: Any, y: Any = None) -> NanFill:
            return self

        def transform(self, X: np.ndarray) -> np.ndarray:
            import numpy as np

            return np.where(np.isnan(X), self.statistics, X)

    update_registered_converter(NanFill, "MlopsNanFill", _nan_fill_shape, _nan_fill_convert)
    return NanFill


def _nan_fill_shape(operator: Any) -> None:
    x = operator.inputs[0].type
    operator.outputs[0].type = x.__class__([x.shape[0], len(operator.raw_operator.statistics)])


def _nan_fill_convert(scope: Any, operator: Any, container: Any) -> None:
    from skl2onnx.algebra.onnx_ops import OnnxIsNaN, OnnxWhere
    from skl2onnx.common.data_types import guess_numpy_type

    opv = container.target_opset
    x = operator.inputs[0]
    stats = operator.raw_operator.statistics.astype(guess_numpy_type(x.type)).reshape(1, -1)
    fill = OnnxWhere(
        OnnxIsNaN(x, op_version=opv), stats, x, op_version=opv, output_names=operator.outputs[:1]
    )
    fill.add_to(scope, container)


class OnnxScorer:
    """Scores model_input frames with an ONNX graph after the pipeline's pandas steps."""

    def __init__(self, onnx: bytes, pipeline: Any):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            onnx, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.steps = _pandas_steps(pipeline)
        self.numeric, self.categorical = _input_columns(pipeline)
        self.derived = _derived_only(self.steps, self.numeric)
        self.classifier = _is_classifier(pipeline)
        self.output = self.session.get_outputs()[1 if self.classifier else 0].name

    @property
    def takes_columns(self) -> bool:
        """Whether request columns can skip the frame: no step before the graph but derived
        features over numeric inputs (datetime parts need pandas)."""
        return self.derived is not None

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        """float64: (n, k) probabilities for a classifier, (n,) predictions for a regressor."""
        return self._run(self.feed(frame))

    def scores_columns(self, columns: Mapping[str, Sequence[Any]]) -> np.ndarray:
        """As :meth:`scores`, for validated request columns (feature -> values, None for a
        gap) taken straight to the graph; only where :attr:`takes_columns`."""
        return self._run(self.feed_columns(columns))

    def _run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        import numpy as np

        out = np.asarray(self.session.run([self.output], feed)[0], dtype="float64")
        return out if self.classifier else out.reshape(-1)

    def feed_columns(self, columns: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
        """Graph inputs from request columns, as :meth:`feed` makes them from the frame that
        ``features.input_frame`` builds of the same columns: numbers as float64 with None
        as NaN (an absent numeric input, a store feature not given, as NaN throughout),
        derived features computed in order, categories as strings with None as
        :data:`NONE` (JSON has no NaN)."""
        import numpy as np

        if self.derived is None:
            raise ValueError("this graph's pandas steps need a frame: use scores()")
        derived = self.derived
        rows = len(next(iter(columns.values()))) if columns else 0
        # A numeric input the columns lack (a store feature nobody looked up) is missing on
        # every row, as input_frame makes it.
        numbers = {
            c: float_values(columns[c] if c in columns else [None] * rows)
            for c in self.numeric
            if c not in derived
        }
        for name, expression in derived.items():
            numbers[name] = evaluate_arrays(expression, numbers, rows)
        feed = {c: numbers[c].reshape(-1, 1) for c in self.numeric}
        for c in self.categorical:
            values = [NONE if v is None else str(v) for v in columns[c]]
            feed[c] = np.array(values, dtype=object).reshape(-1, 1)
        return feed

    def feed(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Graph inputs after the pandas steps: numbers as float64 (n, 1) with gaps as NaN
        and bools as 0/1, categories as strings (n, 1) with NaN as :data:`MISSING` and None
        as :data:`NONE`."""
        for step in self.steps:
            frame = step.transform(frame)
        feed = {c: _numbers(frame[c]) for c in self.numeric}
        feed.update({c: _strings(frame[c]) for c in self.categorical})
        return feed


def _derived_only(steps: list[Any], numeric: list[str]) -> dict[str, str] | None:
    """The derived features' expressions when they are the only step before the graph and
    read numeric inputs only (or earlier derived features); None otherwise."""
    if any(not hasattr(step, "expressions") for step in steps):
        return None
    expressions = {n: e for step in steps for n, e in (step.expressions or {}).items()}
    known = {c for c in numeric if c not in expressions}
    for name, expression in expressions.items():
        try:  # a name outside ``known`` (a category, a date) is refused by the parser
            parse(expression, frozenset(known))
        except ExpressionError:
            return None
        known.add(name)
    return expressions


def _pandas_steps(pipeline: Any) -> list[Any]:
    """The steps before the graph, but those with nothing to add (they would only copy)."""
    return [s for s in pipeline[:2] if not _adds_nothing(s)]


def _adds_nothing(step: Any) -> bool:
    return any(hasattr(step, a) and not getattr(step, a) for a in ("parts", "expressions"))


def _numbers(column: pd.Series) -> np.ndarray:
    import numpy as np

    return column.to_numpy(dtype="float64", na_value=np.nan).reshape(-1, 1)


def _strings(column: pd.Series) -> np.ndarray:
    """Categories as strings: None as :data:`NONE`, NaN (or any other gap) as :data:`MISSING`.

    scikit-learn's SimpleImputer(missing_values=np.nan) fills NaN but not None in an object
    column, and model_input writes gaps as None: the encoder sees None as a category of its
    own (unseen, unless training data had gaps)."""
    import numpy as np
    import pandas as pd

    values = column.to_numpy(dtype=object)
    out = np.where(pd.isna(values), MISSING, values.astype(str)).astype(object)
    out[[v is None for v in values]] = NONE
    return out.reshape(-1, 1)
