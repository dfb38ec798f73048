"""The metadata store's room: its database URL, its Alembic migration, and every read and write.

``LineageStore`` owns the lineage tables (``models.py``): dataset versions, training runs,
model versions, gate decisions, deployments, drift reports and the final failures of the
projects' tasks. Writes take the table's columns as keyword arguments; reads hand back the
typed, JSON-ready rows of ``rows.py``.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, cast

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from mlops_lib.lineage.models import (
    DatasetVersion,
    Deployment,
    DriftReport,
    GateDecision,
    ModelVersion,
    TaskFailure,
    TrainingRun,
    utcnow,
)
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
)
from mlops_lib.settings import Settings, get_settings

MIGRATIONS = Path(__file__).parent / "migrations"


class Unset(Enum):
    """The type of ``UNSET``: an argument that was not given."""

    UNSET = "unset"


UNSET: Final = Unset.UNSET


def _given(arguments: dict[str, Any], *skip: str) -> dict[str, Any]:
    """The column arguments of a ``record_*``/``update_*`` call (its ``locals()``) that were
    given: on insert the rest take the column default, on update they are left as they are."""
    return {k: v for k, v in arguments.items() if v is not UNSET and k not in ("self", *skip)}


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
    """A table row as a JSON-ready dict (the typed rows of ``rows.py`` are casts of it)."""
    out = {c.name: getattr(obj, c.name) for c in obj.__table__.columns}
    for key in ("created_at", "activated_at", "updated_at", "handled_at", "failed_at"):
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

    def record_dataset(
        self,
        *,
        project: str,
        commit_id: str,
        rows: int,
        schema_hash: str,
        rule_summary: str | Unset = UNSET,
        source: str | Unset = UNSET,
        partition: str | Unset = UNSET,
        dag_run_id: str | Unset = UNSET,
    ) -> DatasetRow:
        """Record an accepted dataset version (idempotent per project and commit)."""
        values = _given(locals())
        match = {"project": project, "commit_id": commit_id}
        return cast(DatasetRow, self._upsert(DatasetVersion, match, values, update=False))

    def record_training(
        self,
        *,
        project: str,
        mlflow_run_id: str,
        data_commit: str,
        spec_hash: str,
        code_version: str,
        dag_id: str | Unset = UNSET,
        dag_run_id: str | Unset = UNSET,
        best_family: str | Unset = UNSET,
        cv_score: float | Unset | None = UNSET,
        trials: int | Unset = UNSET,
        seconds: float | Unset = UNSET,
        trigger: str | Unset = UNSET,
        features: dict[str, Any] | Unset | None = UNSET,
    ) -> TrainingRow:
        """Record a training run (keyed by its MLflow run id)."""
        values = _given(locals())
        match = {"mlflow_run_id": mlflow_run_id}
        return cast(TrainingRow, self._upsert(TrainingRun, match, values))

    def record_model_version(
        self,
        *,
        project: str,
        version: int,
        model_uri: str,
        mlflow_run_id: str,
        data_commit: str,
        holdout_metrics: dict[str, Any] | Unset = UNSET,
    ) -> ModelVersionRow:
        """Record a registered model version (keyed by project and version)."""
        values = _given(locals())
        match = {"project": project, "version": version}
        return cast(ModelVersionRow, self._upsert(ModelVersion, match, values))

    def record_decision(
        self,
        *,
        project: str,
        version: int,
        decision: str,
        reason: str,
        champion_version: int | Unset | None = UNSET,
        challenger_metrics: dict[str, Any] | Unset = UNSET,
        champion_metrics: dict[str, Any] | Unset = UNSET,
    ) -> DecisionRow:
        """Record the promotion gate's (or an operator's) verdict on a version (idempotent per
        project, version and verdict: a retried gate refreshes its row)."""
        values = _given(locals())
        match = {"project": project, "version": version, "decision": decision}
        return cast(DecisionRow, self._upsert(GateDecision, match, values))

    def decisions(self, project: str, version: int) -> list[DecisionRow]:
        """The verdicts recorded on one version, oldest first."""
        with Session(self.engine) as session:
            rows = session.scalars(
                select(GateDecision)
                .where(GateDecision.project == project, GateDecision.version == version)
                .order_by(GateDecision.id)
            ).all()
            return [cast(DecisionRow, _row(d)) for d in rows]

    def chain(self, project: str, version: int | None = None) -> list[ChainLink]:
        """Data commit -> training run -> model version -> gate decisions, newest first."""
        with Session(self.engine) as session:
            query = select(ModelVersion).where(ModelVersion.project == project)
            if version is not None:
                query = query.where(ModelVersion.version == version)
            versions = session.scalars(query.order_by(ModelVersion.version.desc())).all()
            return [self._link(session, project, mv) for mv in versions]

    @staticmethod
    def _link(session: Session, project: str, mv: ModelVersion) -> ChainLink:
        """One model version with its dataset, training run and gate decisions."""
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
        return {
            "dataset": (
                cast(DatasetRow, _row(dataset)) if dataset else {"commit_id": mv.data_commit}
            ),
            "training": cast(TrainingRow, _row(training)) if training else None,
            "model_version": cast(ModelVersionRow, _row(mv)),
            "decisions": [cast(DecisionRow, _row(d)) for d in decisions],
        }

    def record_deployment(
        self,
        *,
        project: str,
        bento_tag: str,
        model_version: int,
        model_tag: str | Unset = UNSET,
        model_uri: str | Unset = UNSET,
        port: int | Unset | None = UNSET,
        ports: list[int] | Unset | None = UNSET,
        url: str | Unset = UNSET,
        state: str | Unset = UNSET,
        reason: str | Unset = UNSET,
        dag_run_id: str | Unset = UNSET,
        runtime: str | Unset = UNSET,
        runtime_reason: str | Unset = UNSET,
        activated_at: datetime | Unset | None = UNSET,
    ) -> DeploymentRow:
        """A new deployment (state ``starting`` unless given)."""
        values = _given(locals())
        return cast(DeploymentRow, self._add(Deployment(**values)))

    def update_deployment(
        self,
        deployment_id: int,
        *,
        state: str | Unset = UNSET,
        reason: str | Unset = UNSET,
        port: int | Unset | None = UNSET,
        ports: list[int] | Unset | None = UNSET,
        url: str | Unset = UNSET,
        activated_at: datetime | Unset | None = UNSET,
        bento_tag: str | Unset = UNSET,
        model_tag: str | Unset = UNSET,
        model_uri: str | Unset = UNSET,
        runtime: str | Unset = UNSET,
        runtime_reason: str | Unset = UNSET,
    ) -> DeploymentRow:
        """Change the given fields of a deployment (``updated_at`` is set)."""
        values = _given(locals(), "deployment_id")
        values["updated_at"] = utcnow()
        return cast(DeploymentRow, self._update(Deployment, deployment_id, values))

    def deployment(self, deployment_id: int) -> DeploymentRow | None:
        with Session(self.engine) as session:
            dep = session.get(Deployment, deployment_id)
            return cast(DeploymentRow, _row(dep)) if dep else None

    def deployments(
        self, project: str | None = None, state: str | None = None, limit: int | None = None
    ) -> list[DeploymentRow]:
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
            return [cast(DeploymentRow, _row(r)) for r in session.scalars(query).all()]

    def record_drift_report(
        self,
        *,
        project: str,
        model_version: int,
        windows: list[str] | Unset = UNSET,
        last_window: str | Unset = UNSET,
        rows: int | Unset = UNSET,
        drifted_features: list[str] | Unset = UNSET,
        scores: dict[str, Any] | Unset = UNSET,
        prediction_drift: float | Unset | None = UNSET,
        live_metric: float | Unset | None = UNSET,
        labelled_rows: int | Unset = UNSET,
        fired: bool | Unset = UNSET,
        reason: str | Unset = UNSET,
        lakefs_uri: str | Unset = UNSET,
        mlflow_run_id: str | Unset = UNSET,
        dag_run_id: str | Unset = UNSET,
        handled_by: str | Unset = UNSET,
        handled_at: datetime | Unset | None = UNSET,
    ) -> DriftReportRow:
        """Record one monitor run's report (idempotent per DAG run: a retried monitor task
        refreshes its report instead of adding a second)."""
        values = _given(locals())
        if not values.get("dag_run_id"):
            return cast(DriftReportRow, self._add(DriftReport(**values)))
        match = {"project": project, "dag_run_id": values["dag_run_id"]}
        return cast(DriftReportRow, self._upsert(DriftReport, match, values))

    def update_drift_report(
        self,
        report_id: int,
        *,
        handled_by: str | Unset = UNSET,
        handled_at: datetime | Unset | None = UNSET,
        outcome: str | Unset = UNSET,
    ) -> DriftReportRow:
        """Change the given fields of a drift report (who acted on it, when, and what it did)."""
        values = _given(locals(), "report_id")
        return cast(DriftReportRow, self._update(DriftReport, report_id, values))

    def drift_report(self, report_id: int) -> DriftReportRow | None:
        with Session(self.engine) as session:
            row = session.get(DriftReport, report_id)
            return cast(DriftReportRow, _row(row)) if row else None

    def drift_reports(self, project: str, limit: int | None = None) -> list[DriftReportRow]:
        """A project's drift reports, newest first."""
        with Session(self.engine) as session:
            query = (
                select(DriftReport)
                .where(DriftReport.project == project)
                .order_by(DriftReport.id.desc())
            )
            if limit:
                query = query.limit(limit)
            return [cast(DriftReportRow, _row(r)) for r in session.scalars(query).all()]

    def record_failure(
        self,
        *,
        project: str,
        dag_id: str,
        stage: str,
        dag_run_id: str | Unset = UNSET,
        task_id: str | Unset = UNSET,
        cause: str | Unset = UNSET,
        try_number: int | Unset | None = UNSET,
        failed_at: datetime | Unset = UNSET,
    ) -> FailureRow:
        """Record a task's final failure (idempotent per DAG run, task and try: a callback
        that runs twice leaves one row)."""
        values = _given(locals())
        match = {
            "dag_id": dag_id,
            "dag_run_id": values.get("dag_run_id", ""),
            "task_id": values.get("task_id", ""),
            "try_number": values.get("try_number"),
        }
        return cast(FailureRow, self._upsert(TaskFailure, match, values))

    def failures(self, project: str, limit: int | None = None) -> list[FailureRow]:
        """A project's recorded failures, newest first."""
        with Session(self.engine) as session:
            query = (
                select(TaskFailure)
                .where(TaskFailure.project == project)
                .order_by(TaskFailure.failed_at.desc(), TaskFailure.id.desc())
            )
            if limit:
                query = query.limit(limit)
            return [cast(FailureRow, _row(r)) for r in session.scalars(query).all()]

    def last_failure(self, project: str) -> LastFailure | None:
        """A project's newest failure with its ``resolved`` flag (the rule: ``_success_after``)."""
        with Session(self.engine) as session:
            found = session.scalar(
                select(TaskFailure)
                .where(TaskFailure.project == project)
                .order_by(TaskFailure.failed_at.desc(), TaskFailure.id.desc())
                .limit(1)
            )
            if found is None:
                return None
            resolved = self._resolved(session, found)
            return cast(LastFailure, _row(found) | {"resolved": resolved})

    @staticmethod
    def _resolved(session: Session, failure: TaskFailure) -> bool:
        """Whether a success of the failure's stage was recorded after it."""
        query = _success_after(failure)
        return query is not None and session.scalar(query.limit(1)) is not None

    def datasets(self, project: str) -> list[DatasetRow]:
        with Session(self.engine) as session:
            rows = session.scalars(
                select(DatasetVersion)
                .where(DatasetVersion.project == project)
                .order_by(DatasetVersion.id.desc())
            ).all()
            return [cast(DatasetRow, _row(r)) for r in rows]


def _success_after(failure: TaskFailure) -> Any | None:
    """What resolves a failure: the record a successful run of its stage leaves, newer than
    the failure. ingest: an accepted dataset version; train and continuous_training: a
    training run of the same DAG; deploy: a deployment that went live; monitor: a drift
    report. Other stages (ingest_labels, an invalid spec) leave no record here: their
    failure stays unresolved until a newer failure replaces it as the last one."""
    project, since = failure.project, failure.failed_at
    if failure.stage == "ingest":
        return select(DatasetVersion.id).where(
            DatasetVersion.project == project, DatasetVersion.created_at > since
        )
    if failure.stage in ("train", "continuous_training"):
        return select(TrainingRun.id).where(
            TrainingRun.project == project,
            TrainingRun.dag_id == failure.dag_id,
            TrainingRun.created_at > since,
        )
    if failure.stage == "deploy":
        return select(Deployment.id).where(
            Deployment.project == project, Deployment.activated_at > since
        )
    if failure.stage == "monitor":
        return select(DriftReport.id).where(
            DriftReport.project == project, DriftReport.created_at > since
        )
    return None


# Seconds a writer waits for another one's lock (Airflow tasks, the CLI and the UI share
# the SQLite file) before SQLite reports "database is locked".
SQLITE_BUSY_TIMEOUT = 30


def engine_for(url: str) -> Engine:
    """An engine for the store; SQLite in WAL mode (readers never block the writer) with
    a busy timeout, so concurrent tasks wait for each other instead of failing."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, pool_pre_ping=True, connect_args={"timeout": SQLITE_BUSY_TIMEOUT})

    @event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT * 1000}")
        cursor.close()

    return engine


@lru_cache(maxsize=4)
def _store(url: str) -> LineageStore:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    migrate(url)
    return LineageStore(engine_for(url))


def lineage_store(settings: Settings | None = None) -> LineageStore:
    """The store for the configured backend, migrated to the latest revision."""
    return _store(database_url(settings or get_settings()))
