"""Airflow local settings of the platform (every Airflow component imports this module).

When ``MLOPS_AIRFLOW_PRELOAD`` is set (`mlops stack up` sets it for the scheduler only), the
libraries the platform's tasks import are imported once at start: LocalExecutor forks its
workers from the scheduler and each task from a worker, so a task starts with pandas,
scikit-learn, MLflow and the rest already in memory instead of importing them again (about
5 s a task on two cores). The platform's own modules are not preloaded, so a task always
runs the code on disk. DAG parsing is not affected: the DAG processor does not preload.
"""

from __future__ import annotations

import importlib
import logging
import os

PRELOAD_ENV = "MLOPS_AIRFLOW_PRELOAD"
# Names Airflow copies from this module into airflow.settings: none.
__all__: list[str] = []
# The third-party libraries behind the DAGs' tasks (dags/mlops_projects.py), heaviest first.
TASK_MODULES = (
    "mlflow",
    "mlflow.sklearn",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.pipeline",
    "optuna",
    "pandas",
    "pyarrow.parquet",
    "skops.io",
    "lakefs",
    "lakefs_sdk",
    "skl2onnx",
    "onnxruntime",
)


def _preload() -> None:
    log = logging.getLogger(__name__)
    for name in TASK_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a task imports it again and reports the error itself
            log.warning("preloading %s failed: %s", name, exc)


if os.environ.get(PRELOAD_ENV) == "1":
    _preload()
