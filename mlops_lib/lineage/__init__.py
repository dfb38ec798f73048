"""Metadata store (lineage): dataset versions, training runs, model versions, gate decisions,
deployments and drift reports.

SQLAlchemy models in the platform's own database (SQLite under the stack folder by default,
PostgreSQL with the postgres backend), migrated with Alembic. The store hands rows back as the
TypedDicts of ``rows.py``.
"""

from mlops_lib.lineage.rows import (
    ChainLink,
    DatasetRow,
    DecisionRow,
    DeploymentRow,
    DriftReportRow,
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
    "LineageStore",
    "ModelVersionRow",
    "TrainingRow",
    "UnrecordedDataset",
    "lineage_store",
    "stored_time",
]
