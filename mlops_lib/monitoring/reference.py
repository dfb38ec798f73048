"""Reference profiles: what a model version's served rows are compared with.

The reference of a version is a whylogs profile of its holdout rows (the spec's features,
the model's prediction and score), kept in lakeFS (branch ``monitoring``, see
:func:`mlops_lib.layout.reference_path`) and as an MLflow artifact of the version's run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_lib import layout, profiles
from mlops_lib import versioning as vc
from mlops_lib.layout import MONITORING_BRANCH
from mlops_lib.settings import Settings, get_settings
from mlops_lib.spec import ProjectSpec
from mlops_lib.tracking import connect as connect_mlflow

if TYPE_CHECKING:
    import pandas as pd
    from whylogs.core import DatasetProfileView

OUTPUTS = ("prediction", "score")


def monitored_frame(spec: ProjectSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """The columns monitoring compares: the model's inputs (request columns and store
    features as served) and its outputs.

    Missing columns stay missing (the report says so) rather than failing the profile.
    """
    cols = [c for c in (*spec.model_inputs, *OUTPUTS) if c in frame.columns]
    return frame[cols]


def reference_frame(spec: ProjectSpec, model: Any, rows: pd.DataFrame) -> pd.DataFrame:
    """Holdout rows with the model's prediction and score, as served rows are logged."""
    import numpy as np  # heavy: kept out of DAG parsing

    from mlops_lib.features import model_input  # imports scikit-learn

    out = rows[list(spec.model_inputs)].copy()
    x = model_input(rows, spec)
    if spec.target.task == "classification" and hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(x))
        classes = [c.item() if hasattr(c, "item") else c for c in model.classes_]
        out["prediction"] = [classes[i] for i in proba.argmax(axis=1)]
        out["score"] = proba[:, -1]
    else:
        pred = np.asarray(model.predict(x), dtype="float64")
        out["prediction"] = pred
        out["score"] = pred
    return out


def ensure_monitoring_branch(project: str, settings: Settings) -> None:
    vc.ensure_branch(project, MONITORING_BRANCH, settings=settings)


def save_reference(
    project: str,
    version: int | str,
    frame: pd.DataFrame,
    *,
    run_id: str | None = None,
    settings: Settings | None = None,
) -> str:
    """Profile a reference frame; store it in lakeFS (committed) and as an MLflow artifact.

    Returns the lakeFS path.
    """
    settings = settings or get_settings()
    data = profiles.serialize(profiles.profile(profiles.sample(frame)))
    ensure_monitoring_branch(project, settings)
    path = layout.reference_path(project, version)
    vc.upload(project, MONITORING_BRANCH, path, data, "application/octet-stream", settings)
    vc.commit(
        project,
        MONITORING_BRANCH,
        f"reference profile of {project} v{version}",
        {"model_version": str(version), "rows": str(len(frame))},
        settings,
    )
    if run_id:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "reference_profile.bin"
            local.write_bytes(data)
            connect_mlflow(settings).log_artifact(run_id, str(local), "monitoring")
    return path


def load_reference(
    project: str, version: int | str, settings: Settings | None = None
) -> DatasetProfileView:
    """The reference profile of a model version."""
    data = vc.read(project, MONITORING_BRANCH, layout.reference_path(project, version), settings)
    return profiles.deserialize(data)
