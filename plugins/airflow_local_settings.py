"""Airflow local settings of the platform (every Airflow component imports this module).

When ``MLOPS_AIRFLOW_PRELOAD`` is set (`mlops stack up` sets it for the scheduler only), the
platform's task modules are imported once at start: LocalExecutor forks its workers from the
scheduler and each task from a worker, so a task starts with pandas, scikit-learn, MLflow and
the stages already in memory instead of importing them again (about 5 s a task on two
cores). DAG parsing is not affected: the DAG processor does not preload.
"""

from __future__ import annotations

import importlib
import logging
import os

PRELOAD_ENV = "MLOPS_AIRFLOW_PRELOAD"
# What the DAGs' tasks import (dags/mlops_projects.py), heaviest first.
TASK_MODULES = (
    "mlops_lib.serving.deploy",
    "mlops_lib.training",
    "mlops_lib.registry",
    "mlops_lib.continuous_training",
    "mlops_lib.monitoring.report",
    "mlops_lib.labels",
    "mlops_lib.ingest",
    "mlops_lib.datasets",
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
