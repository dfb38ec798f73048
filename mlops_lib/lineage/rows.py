"""The rows the lineage store hands back: one TypedDict per table, JSON-ready.

Keys are the table's columns (see ``models.py``); timestamps come back as ISO 8601 strings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypedDict


def stored_time(value: str | None) -> datetime | None:
    """A time the store handed back (ISO string; naive ones are UTC) as an aware datetime."""
    if not value:
        return None
    when = datetime.fromisoformat(value)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class DatasetRow(TypedDict):
    """An accepted batch on lakeFS main (``dataset_versions``)."""

    id: int
    project: str
    commit_id: str
    rows: int
    schema_hash: str
    rule_summary: str
    source: str
    partition: str
    dag_run_id: str
    created_at: str


class TrainingRow(TypedDict):
    """One AutoML training, the MLflow parent run (``training_runs``)."""

    id: int
    project: str
    mlflow_run_id: str
    data_commit: str
    spec_hash: str
    code_version: str
    dag_id: str
    dag_run_id: str
    best_family: str
    cv_score: float | None
    trials: int
    seconds: float
    trigger: str
    features: dict[str, Any] | None
    created_at: str


class ModelVersionRow(TypedDict):
    """A registered version of a project's model (``model_versions``)."""

    id: int
    project: str
    version: int
    model_uri: str
    mlflow_run_id: str
    data_commit: str
    holdout_metrics: dict[str, Any]
    created_at: str


class DecisionRow(TypedDict):
    """The promotion gate's verdict on a challenger (``gate_decisions``)."""

    id: int
    project: str
    version: int
    decision: str
    reason: str
    champion_version: int | None
    challenger_metrics: dict[str, Any]
    champion_metrics: dict[str, Any]
    created_at: str


class DeploymentRow(TypedDict):
    """A bento of one model version started for a project's endpoint (``deployments``)."""

    id: int
    project: str
    bento_tag: str
    model_tag: str
    model_version: int
    model_uri: str
    port: int | None
    ports: list[int] | None
    url: str
    state: str
    reason: str
    dag_run_id: str
    runtime: str
    runtime_reason: str
    created_at: str
    activated_at: str | None
    updated_at: str


class DriftReportRow(TypedDict):
    """One monitor run against the training reference (``drift_reports``)."""

    id: int
    project: str
    model_version: int
    windows: list[str]
    last_window: str
    rows: int
    drifted_features: list[str]
    scores: dict[str, Any]
    prediction_drift: float | None
    live_metric: float | None
    labelled_rows: int
    fired: bool
    reason: str
    lakefs_uri: str
    mlflow_run_id: str
    dag_run_id: str
    handled_by: str
    handled_at: str | None
    outcome: str
    created_at: str


class FailureRow(TypedDict):
    """The final failure of a task of a project's DAG (``failures``)."""

    id: int
    project: str
    stage: str
    dag_id: str
    dag_run_id: str
    task_id: str
    try_number: int | None
    cause: str
    failed_at: str


class LastFailure(FailureRow):
    """A project's newest failure and whether a later success of its stage resolved it
    (the rule: ``store._success_after``)."""

    resolved: bool


class UnrecordedDataset(TypedDict):
    """A data commit a model version names but the store has no dataset row for."""

    commit_id: str


class ChainLink(TypedDict):
    """One model version with what it came from and what the gate said about it."""

    dataset: DatasetRow | UnrecordedDataset
    training: TrainingRow | None
    model_version: ModelVersionRow
    decisions: list[DecisionRow]
