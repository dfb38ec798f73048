"""Checks that the platform's services answer, as run by the `platform_check` DAG."""

from __future__ import annotations

from mlops_lib import versioning as vc
from mlops_lib.layout import MAIN
from mlops_lib.settings import Settings, get_settings
from mlops_lib.tracking import connect as connect_mlflow

CHECK_REPOSITORY = "platform-check"
CHECK_EXPERIMENT = "platform-check"


def check_lakefs(settings: Settings | None = None) -> str:
    """Ensure the check repository exists on lakeFS; returns its main head commit id."""
    return vc.head(CHECK_REPOSITORY, MAIN, settings or get_settings())


def check_mlflow(settings: Settings | None = None) -> str:
    """Ensure the check experiment exists on the MLflow server; returns its id."""
    settings = settings or get_settings()
    client = connect_mlflow(settings)
    exp = client.get_experiment_by_name(CHECK_EXPERIMENT)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(CHECK_EXPERIMENT)
