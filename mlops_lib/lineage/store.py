"""Access to the metadata store; the schema is migrated with Alembic on first use."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from mlops_lib.lineage.models import (
    DatasetVersion,
    Deployment,
    DriftReport,
    GateDecision,
    ModelVersion,
    TrainingRun,
    utcnow,
)
from mlops_lib.settings import Settings, get_settings

MIGRATIONS = Path(__file__).parent / "migrations"


def database_url(settings: Settings) -> str:
    """The metadata store's URL for the configured backend."""
    if settings.lineage_db_url:
        return settings.lineage_db_url
    if settings.backend == "postgres":
        return settings.postgres_url(settings.postgres_lineage_db)
    return f"sqlite:///{settings.stack_dir / 'lineage.db'}"


def migrate(url: str) -> None:
    """Bring the schema to the latest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")


def _row(obj: Any) -> dict[str, Any]:
    out = {c.name: getattr(obj, c.name) for c in obj.__table__.columns}
    for key in ("created_at", "activated_at", "updated_at", "handled_at"):
        if out.get(key) is not None:
            out[key] = out[key].isoformat()
    return out


class LineageStore:
    """Writes and reads of the lineage chain."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def _add(self, obj: Any) -> dict[str, Any]:
        with Session(self.engine) as session, session.begin():
            session.add(obj)
            session.flush()
            return _row(obj)

    def _upsert(
        self, model: Any, match: dict[str, Any], values: dict[str, Any], *, update: bool = True
    ) -> dict[str, Any]:
        """Insert a row, or return (and with ``update``, refresh) the one matching ``match``."""
        with Session(self.engine) as session, session.begin():
            query = select(model).where(*(getattr(model, k) == v for k, v in match.items()))
            found = session.scalar(query)
            if found is not None:
                if update:
                    for k, v in values.items():
                        setattr(found, k, v)
                return _row(found)
            obj = model(**values)
            session.add(obj)
            session.flush()
            return _row(obj)

    def record_dataset(self, **values: Any) -> dict[str, Any]:
        """Record an accepted dataset version (idempotent per project and commit)."""
        match = {"project": values["project"], "commit_id": values["commit_id"]}
        return self._upsert(DatasetVersion, match, values, update=False)

    def record_training(self, **values: Any) -> dict[str, Any]:
        """Record a training run (keyed by its MLflow run id)."""
        return self._upsert(TrainingRun, {"mlflow_run_id": values["mlflow_run_id"]}, values)

    def record_model_version(self, **values: Any) -> dict[str, Any]:
        """Record a registered model version (keyed by project and version)."""
        match = {"project": values["project"], "version": values["version"]}
        return self._upsert(ModelVersion, match, values)

    def record_decision(self, **values: Any) -> dict[str, Any]:
        return self._add(GateDecision(**values))

    def chain(self, project: str, version: int | None = None) -> list[dict[str, Any]]:
        """Data commit -> training run -> model version -> gate decisions, newest first."""
        with Session(self.engine) as session:
            query = select(ModelVersion).where(ModelVersion.project == project)
            if version is not None:
                query = query.where(ModelVersion.version == version)
            versions = session.scalars(query.order_by(ModelVersion.version.desc())).all()
            out = []
            for mv in versions:
                dataset = session.scalar(
                    select(DatasetVersion).where(
                        DatasetVersion.project == project,
                        DatasetVersion.commit_id == mv.data_commit,
                    )
                )
                training = session.scalar(
                    select(TrainingRun).where(TrainingRun.mlflow_run_id == mv.mlflow_run_id)
                )
                decisions = session.scalars(
                    select(GateDecision)
                    .where(GateDecision.project == project, GateDecision.version == mv.version)
                    .order_by(GateDecision.id)
                ).all()
                out.append(
                    {
                        "dataset": _row(dataset) if dataset else {"commit_id": mv.data_commit},
                        "training": _row(training) if training else None,
                        "model_version": _row(mv),
                        "decisions": [_row(d) for d in decisions],
                    }
                )
            return out

    def record_deployment(self, **values: Any) -> dict[str, Any]:
        """A new deployment (state ``starting`` unless given)."""
        return self._add(Deployment(**values))

    def _update(self, model: Any, row_id: int, values: dict[str, Any]) -> dict[str, Any]:
        """Change fields of one row (KeyError naming the table when it does not exist)."""
        with Session(self.engine) as session, session.begin():
            row = session.get(model, row_id)
            if row is None:
                raise KeyError(f"no {model.__tablename__} row {row_id}")
            for k, v in values.items():
                setattr(row, k, v)
            session.flush()
            return _row(row)

    def update_deployment(self, deployment_id: int, **values: Any) -> dict[str, Any]:
        """Change a deployment's fields (``updated_at`` is set)."""
        return self._update(Deployment, deployment_id, values | {"updated_at": utcnow()})

    def deployment(self, deployment_id: int) -> dict[str, Any] | None:
        with Session(self.engine) as session:
            dep = session.get(Deployment, deployment_id)
            return _row(dep) if dep else None

    def deployments(
        self, project: str | None = None, state: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Deployments, newest first (optionally of one project and in one state)."""
        with Session(self.engine) as session:
            query = select(Deployment)
            if project is not None:
                query = query.where(Deployment.project == project)
            if state is not None:
                query = query.where(Deployment.state == state)
            query = query.order_by(Deployment.id.desc())
            if limit:
                query = query.limit(limit)
            return [_row(r) for r in session.scalars(query).all()]

    def record_drift_report(self, **values: Any) -> dict[str, Any]:
        return self._add(DriftReport(**values))

    def update_drift_report(self, report_id: int, **values: Any) -> dict[str, Any]:
        return self._update(DriftReport, report_id, values)

    def drift_report(self, report_id: int) -> dict[str, Any] | None:
        with Session(self.engine) as session:
            row = session.get(DriftReport, report_id)
            return _row(row) if row else None

    def drift_reports(self, project: str, limit: int | None = None) -> list[dict[str, Any]]:
        """A project's drift reports, newest first."""
        with Session(self.engine) as session:
            query = (
                select(DriftReport)
                .where(DriftReport.project == project)
                .order_by(DriftReport.id.desc())
            )
            if limit:
                query = query.limit(limit)
            return [_row(r) for r in session.scalars(query).all()]

    def datasets(self, project: str) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            rows = session.scalars(
                select(DatasetVersion)
                .where(DatasetVersion.project == project)
                .order_by(DatasetVersion.id.desc())
            ).all()
            return [_row(r) for r in rows]


@lru_cache(maxsize=4)
def _store(url: str) -> LineageStore:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    migrate(url)
    return LineageStore(create_engine(url, pool_pre_ping=True))


def lineage_store(settings: Settings | None = None) -> LineageStore:
    """The store for the configured backend, migrated to the latest revision."""
    return _store(database_url(settings or get_settings()))
