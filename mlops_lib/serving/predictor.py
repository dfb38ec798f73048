"""Vectorised predictions of a fitted pipeline for validated request rows."""

from __future__ import annotations

from typing import Any

from mlops_lib.spec import ProjectSpec


class Predictor:
    """Turns validated rows into one DataFrame, predicts once, shapes the response."""

    def __init__(self, spec: ProjectSpec, model: Any, version: str):
        self.spec = spec
        self.model = model
        self.version = str(version)
        self.classes = [
            c.item() if hasattr(c, "item") else c for c in getattr(model, "classes_", [])
        ]

    def predict(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import pandas as pd

        from mlops_lib.features import model_input

        frame = model_input(pd.DataFrame.from_records(rows, columns=self.spec.features), self.spec)
        out: dict[str, Any] = {"model_version": self.version}
        if self.spec.target.task == "classification" and hasattr(self.model, "predict_proba"):
            proba = self.model.predict_proba(frame)
            best = proba.argmax(axis=1)
            out["predictions"] = [self.classes[i] for i in best]
            out["probabilities"] = [
                dict(zip(map(str, self.classes), map(float, p), strict=True)) for p in proba
            ]
        else:
            out["predictions"] = [float(v) for v in self.model.predict(frame)]
        return out
