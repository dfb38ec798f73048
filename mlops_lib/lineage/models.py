"""Tables of the metadata store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class DatasetVersion(Base):
    """An accepted batch on lakeFS main."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("project", "commit_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    commit_id: Mapped[str] = mapped_column(String(80))
    rows: Mapped[int] = mapped_column(Integer)
    schema_hash: Mapped[str] = mapped_column(String(32))
    rule_summary: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(Text, default="")
    partition: Mapped[str] = mapped_column(Text, default="")
    dag_run_id: Mapped[str] = mapped_column(String(250), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TrainingRun(Base):
    """One AutoML training (the MLflow parent run)."""

    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    mlflow_run_id: Mapped[str] = mapped_column(String(64), unique=True)
    data_commit: Mapped[str] = mapped_column(String(80))
    spec_hash: Mapped[str] = mapped_column(String(32))
    code_version: Mapped[str] = mapped_column(String(64))
    dag_id: Mapped[str] = mapped_column(String(250), default="")
    dag_run_id: Mapped[str] = mapped_column(String(250), default="")
    best_family: Mapped[str] = mapped_column(String(64), default="")
    cv_score: Mapped[float | None] = mapped_column(default=None)
    trials: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(default=0.0)
    trigger: Mapped[str] = mapped_column(Text, default="")
    # The training set's feature store part: views, registry hash and their lakeFS commit.
    features: Mapped[dict | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelVersion(Base):
    """A registered version of a project's model."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("project", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    model_uri: Mapped[str] = mapped_column(Text)
    mlflow_run_id: Mapped[str] = mapped_column(String(64))
    data_commit: Mapped[str] = mapped_column(String(80))
    holdout_metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class GateDecision(Base):
    """The promotion gate's verdict on a challenger."""

    __tablename__ = "gate_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    decision: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    champion_version: Mapped[int | None] = mapped_column(Integer, default=None)
    challenger_metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    champion_metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Deployment(Base):
    """A bento of one model version started for a project's endpoint.

    ``state``: starting -> active (serving behind the project's stable endpoint) ->
    retired (replaced by a newer one) or rolled_back; failed when it never passed its
    smoke test. ``activated_at`` marks deployments that once served (rollback targets).
    """

    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    bento_tag: Mapped[str] = mapped_column(String(200))
    model_tag: Mapped[str] = mapped_column(String(200), default="")
    model_version: Mapped[int] = mapped_column(Integer)
    model_uri: Mapped[str] = mapped_column(Text, default="")
    # Replica 0's port and URL; ``ports``: every replica's, replica 0 first (None on rows
    # from before replicas: one process on ``port``).
    port: Mapped[int | None] = mapped_column(Integer, default=None)
    ports: Mapped[list[int] | None] = mapped_column(JSON, default=None)
    url: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(32), default="starting")
    reason: Mapped[str] = mapped_column(Text, default="")
    dag_run_id: Mapped[str] = mapped_column(String(250), default="")
    # What scores: "onnx" (the compiled graph) or "sklearn" (the pipeline), and why not onnx.
    runtime: Mapped[str] = mapped_column(String(16), default="")
    runtime_reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DriftReport(Base):
    """One monitor run: what the served model saw against its training reference."""

    __tablename__ = "drift_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    model_version: Mapped[int] = mapped_column(Integer)
    windows: Mapped[list[str]] = mapped_column(JSON, default=list)
    last_window: Mapped[str] = mapped_column(String(40), default="")
    rows: Mapped[int] = mapped_column(Integer, default=0)
    drifted_features: Mapped[list[str]] = mapped_column(JSON, default=list)
    scores: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prediction_drift: Mapped[float | None] = mapped_column(default=None)
    # The spec's training metric on labelled production predictions, when labels arrived.
    live_metric: Mapped[float | None] = mapped_column(default=None)
    labelled_rows: Mapped[int] = mapped_column(Integer, default=0)
    fired: Mapped[bool] = mapped_column(default=False)
    reason: Mapped[str] = mapped_column(Text, default="")
    lakefs_uri: Mapped[str] = mapped_column(Text, default="")
    mlflow_run_id: Mapped[str] = mapped_column(String(64), default="")
    dag_run_id: Mapped[str] = mapped_column(String(250), default="")
    # The continuous-training run that acted on it (or the report whose episode absorbed it).
    handled_by: Mapped[str] = mapped_column(String(250), default="")
    handled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    # What that retraining did: folded production rows in, or skipped and why.
    outcome: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TaskFailure(Base):
    """The final failure of a task of one of a project's DAGs (``<project>__<stage>``): a
    failure Airflow retries is not one. ``cause``: the error's class and first line."""

    __tablename__ = "failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    stage: Mapped[str] = mapped_column(String(64))
    dag_id: Mapped[str] = mapped_column(String(250))
    dag_run_id: Mapped[str] = mapped_column(String(250), default="")
    task_id: Mapped[str] = mapped_column(String(250), default="")
    try_number: Mapped[int | None] = mapped_column(Integer, default=None)
    cause: Mapped[str] = mapped_column(Text, default="")
    failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
