"""Vectorised predictions of a fitted pipeline for validated request rows or columns.

Requests come as rows (``instances``) or as columns (``columns`` + ``data``); both become
one model-input frame, are scored by the deployment's runtime (the compiled ONNX graph or
the scikit-learn pipeline itself) and answered in the form they came in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops_lib.features import input_frame
from mlops_lib.spec import ProjectSpec

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


class PipelineScorer:
    """The scikit-learn pipeline itself: class probabilities or predictions."""

    def __init__(self, model: Any, classify: bool) -> None:
        self.model = model
        self.proba = classify and hasattr(model, "predict_proba")

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        import numpy as np

        if self.proba:
            return np.asarray(self.model.predict_proba(frame), dtype="float64")
        return np.asarray(self.model.predict(frame), dtype="float64")


class Predictor:
    """Rows or columns -> one model-input frame -> scores -> response."""

    def __init__(self, spec: ProjectSpec, model: Any, version: str) -> None:
        self.spec = spec
        self.model = model
        self.version = str(version)
        self.classify = spec.target.task == "classification"
        self.scorer = PipelineScorer(model, self.classify)
        allowed = spec.schema.columns[spec.target.column].allowed
        classes = getattr(model, "classes_", None) if model is not None else None
        if classes is None:
            classes = sorted(allowed) if allowed else []
        self.classes = [c.item() if hasattr(c, "item") else c for c in classes]
        self.class_names = [str(c) for c in self.classes]

    def frame_from_rows(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        """Validated rows as the model-input frame (model inputs in spec order): the
        features, and the store features the rows carry (the others are missing, see
        ``features.input_frame``)."""
        columns = {f: [row[f] for row in rows] for f in self.spec.features}
        carried = [f for f in self.spec.store_features if rows and f in rows[0]]
        columns |= {f: [row.get(f) for row in rows] for f in carried}
        return input_frame(columns, self.spec)

    def frame_from_columns(self, values: dict[str, list[Any]]) -> pd.DataFrame:
        """Validated columns, with the store features looked up for them, as the
        model-input frame (model inputs in spec order)."""
        return input_frame(values, self.spec)

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        """Class probabilities (classification) or predictions (regression)."""
        return self.scorer.scores(frame)

    def predictions(self, scores: np.ndarray) -> list[Any]:
        if self.classify and scores.ndim == 2:
            classes = self.classes
            return [classes[i] for i in scores.argmax(axis=1).tolist()]
        return scores.astype(float).tolist()

    def response(self, scores: np.ndarray) -> dict[str, Any]:
        """JSON body of the row form: predictions in request order, probabilities per row
        as ``{class: p}``, model version."""
        out: dict[str, Any] = {"model_version": self.version}
        out["predictions"] = self.predictions(scores)
        if self.classify and scores.ndim == 2:
            names = self.class_names
            out["probabilities"] = [dict(zip(names, p, strict=True)) for p in scores.tolist()]
        return out

    def columnar_response(self, scores: np.ndarray) -> dict[str, Any]:
        """JSON body of the columnar form: predictions, and probabilities as
        ``{"columns": [class, ...], "data": [[p, ...], ...]}``."""
        out: dict[str, Any] = {"model_version": self.version}
        out["predictions"] = self.predictions(scores)
        if self.classify and scores.ndim == 2:
            out["probabilities"] = {"columns": self.class_names, "data": scores.tolist()}
        return out

    def log_scores(self, scores: np.ndarray) -> list[float]:
        """One number per row for the prediction log: the probability of the last class
        (the positive one of a binary classifier), else the prediction."""
        if scores.ndim == 2:
            return scores[:, -1].astype(float).tolist()
        return scores.astype(float).tolist()
