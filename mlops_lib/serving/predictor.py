"""Vectorised predictions of a fitted pipeline for validated request rows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops_lib.spec import ProjectSpec

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


class Predictor:
    """Rows -> one model-input frame -> scores -> response; the model is optional (API side)."""

    def __init__(self, spec: ProjectSpec, model: Any | None, version: str):
        self.spec = spec
        self.model = model
        self.version = str(version)
        self.classify = spec.target.task == "classification"
        allowed = spec.schema.columns[spec.target.column].allowed
        classes = getattr(model, "classes_", None) if model is not None else None
        if classes is None:
            classes = sorted(allowed) if allowed else []
        self.classes = [c.item() if hasattr(c, "item") else c for c in classes]

    def array(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Validated rows as an object array in the spec's feature order (no pandas: the
        API side only transports; features are derived once per batch by ``from_array``)."""
        import numpy as np

        features = self.spec.features
        out = np.empty((len(rows), len(features)), dtype=object)
        for i, row in enumerate(rows):
            out[i] = [row[f] for f in features]
        return out

    def from_array(self, rows: np.ndarray) -> pd.DataFrame:
        """A frame from an object array in feature order (the batching transport)."""
        import pandas as pd

        from mlops_lib.features import model_input  # imports scikit-learn

        return model_input(pd.DataFrame(rows, columns=self.spec.features), self.spec)

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        """Class probabilities (classification) or predictions (regression)."""
        import numpy as np

        if self.classify and hasattr(self.model, "predict_proba"):
            return np.asarray(self.model.predict_proba(frame), dtype="float64")
        return np.asarray(self.model.predict(frame), dtype="float64")

    def response(self, scores: np.ndarray) -> dict[str, Any]:
        """JSON body: predictions in request order, probabilities, model version."""
        out: dict[str, Any] = {"model_version": self.version}
        if self.classify and scores.ndim == 2:
            best = scores.argmax(axis=1)
            out["predictions"] = [self.classes[i] for i in best]
            names = [str(c) for c in self.classes]
            out["probabilities"] = [dict(zip(names, map(float, p), strict=True)) for p in scores]
        else:
            out["predictions"] = [float(v) for v in scores]
        return out

    def log_scores(self, scores: np.ndarray) -> list[float]:
        """One number per row for the prediction log: the probability of the last class
        (the positive one of a binary classifier), else the prediction."""
        if scores.ndim == 2:
            return scores[:, -1].astype(float).tolist()
        return scores.astype(float).tolist()
