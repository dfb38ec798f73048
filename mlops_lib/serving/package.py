"""Packaging a registered model for BentoML and the command that serves it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from mlops_lib.settings import Settings, get_settings, process_env

BENTOS_DIR = Path(__file__).resolve().parents[2] / "bentos"


def use_store(settings: Settings) -> Path:
    """Point BentoML at the platform's store (must happen before bentoml is imported)."""
    store = settings.bento_store
    store.mkdir(parents=True, exist_ok=True)
    os.environ["BENTOML_HOME"] = str(store)
    return store


def import_model(
    project: str, model_uri: str, version: int | str, settings: Settings | None = None
) -> str:
    """Copy a registered MLflow model into the BentoML model store; returns the model tag."""
    settings = settings or get_settings()
    use_store(settings)
    import bentoml
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_url)
    model = bentoml.mlflow.import_model(
        project.replace("_", "-"),
        model_uri,
        labels={"project": project, "model_version": str(version)},
        metadata={"model_uri": model_uri},
    )
    return str(model.tag)


def serve_command(project: str, model_tag: str, version: int | str, port: int) -> list[str]:
    """``bentoml serve`` of the project's service on a port."""
    bentoml = str(Path(sys.executable).parent / "bentoml")
    return [
        bentoml,
        "serve",
        "service:ModelService",
        "--working-dir",
        str(BENTOS_DIR),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--arg",
        f"project={project}",
        "--arg",
        f"model_tag={model_tag}",
        "--arg",
        f"model_version={version}",
    ]


def serve_env(settings: Settings) -> dict[str, Any]:
    """Environment of a serving process: the platform settings and the BentoML store."""
    from mlops_lib.settings import settings_env

    return {
        **process_env(),
        **settings_env(settings),
        "BENTOML_HOME": str(settings.bento_store),
        "BENTOML_DO_NOT_TRACK": "True",
    }
