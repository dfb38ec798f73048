"""The demo spec as unit tests use it."""

from __future__ import annotations

from pathlib import Path

from mlops_lib.spec import ProjectSpec, load_spec

CHURN_FILE = Path(__file__).resolve().parents[2] / "projects" / "churn.yaml"


def churn_spec(*, features: bool = False) -> ProjectSpec:
    """The demo's churn spec; without its feature views unless asked (most tests are about
    the snapshot columns a request sends)."""
    spec = load_spec(CHURN_FILE)
    return spec if features else spec.model_copy(update={"feature_store": None})
