"""Metadata store (lineage): dataset versions, training runs, model versions, gate decisions.

SQLAlchemy models in the platform's own database (SQLite under the stack folder by default,
PostgreSQL with the postgres backend), migrated with Alembic.
"""

from mlops_lib.lineage.store import LineageStore, lineage_store

__all__ = ["LineageStore", "lineage_store"]
