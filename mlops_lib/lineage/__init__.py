"""Metadata store (lineage): dataset versions, training runs, model versions, gate decisions,
deployments, drift reports and the final failures of the projects' tasks.

SQLAlchemy models in the platform's own database (SQLite under the stack folder by default,
PostgreSQL with the postgres backend), migrated with Alembic. The store hands rows back as the
TypedDicts of ``rows.py``.
"""

from mlops_lib.lineage.failures import record_stage_failure
from mlops_lib.lineage.rows import (
    ChainLink,
    DatasetRow,
    DecisionRow,
    DeploymentRow,
    DriftReportRow,
    FailureRow,
    LastFailure,
    ModelVersionRow,
    TrainingRow,
    UnrecordedDataset,
    stored_time,
)
from mlops_lib.lineage.store import LineageStore, lineage_store

__all__ = [
    "ChainLink",
    "DatasetRow",
    "DecisionRow",
    "DeploymentRow",
    "DriftReportRow",
    "FailureRow",
    "LastFailure",
    "LineageStore",
    "ModelVersionRow",
    "TrainingRow",
    "UnrecordedDataset",
    "lineage_store",
    "record_stage_failure",
    "stored_time",
]
