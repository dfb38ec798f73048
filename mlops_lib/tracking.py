"""The platform's connection to MLflow: the tracking server and the platform account.

MLflow runs with its basic-auth app; every client of the platform (tasks, CLI, tests)
connects through ``connect`` so that it authenticates as the platform account.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from mlops_lib.settings import Settings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# Where the MLflow client reads basic-auth credentials from (MLflow's documented variables).
USERNAME_VAR = "MLFLOW_TRACKING_USERNAME"
PASSWORD_VAR = "MLFLOW_TRACKING_PASSWORD"


def client_env(settings: Settings) -> dict[str, str]:
    """MLflow client variables of the platform account (empty when no password is set)."""
    if settings.mlflow_password is None:
        return {}
    return {USERNAME_VAR: settings.mlflow_user, PASSWORD_VAR: settings.secret("mlflow_password")}


def connect(settings: Settings) -> MlflowClient:
    """Point this process's MLflow client at the platform's server, authenticated."""
    import mlflow  # heavy: kept out of DAG parsing
    from mlflow.tracking import MlflowClient

    os.environ.update(client_env(settings))
    mlflow.set_tracking_uri(settings.mlflow_url)
    return MlflowClient(settings.mlflow_url)


# What MLflow accepts in a metric or parameter name; anything else becomes "_".
_NOT_IN_A_NAME = re.compile(r"[^A-Za-z0-9_\-. :/]")


def metric_name(text: str) -> str:
    """A name MLflow accepts, from text such as a column name (``sepal length (cm)`` ->
    ``sepal length _cm_``)."""
    return _NOT_IN_A_NAME.sub("_", text)
