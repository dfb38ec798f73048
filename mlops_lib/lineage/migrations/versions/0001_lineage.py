"""Lineage: dataset versions, training runs, model versions, gate decisions.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project", sa.String(64), nullable=False, index=True),
        sa.Column("commit_id", sa.String(80), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("schema_hash", sa.String(32), nullable=False),
        sa.Column("rule_summary", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("partition", sa.Text, nullable=False),
        sa.Column("dag_run_id", sa.String(250), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("project", "commit_id"),
    )
    op.create_table(
        "training_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project", sa.String(64), nullable=False, index=True),
        sa.Column("mlflow_run_id", sa.String(64), nullable=False, unique=True),
        sa.Column("data_commit", sa.String(80), nullable=False),
        sa.Column("spec_hash", sa.String(32), nullable=False),
        sa.Column("code_version", sa.String(64), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("dag_run_id", sa.String(250), nullable=False),
        sa.Column("best_family", sa.String(64), nullable=False),
        sa.Column("cv_score", sa.Float, nullable=True),
        sa.Column("trials", sa.Integer, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("trigger", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project", sa.String(64), nullable=False, index=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("model_uri", sa.Text, nullable=False),
        sa.Column("mlflow_run_id", sa.String(64), nullable=False),
        sa.Column("data_commit", sa.String(80), nullable=False),
        sa.Column("holdout_metrics", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("project", "version"),
    )
    op.create_table(
        "gate_decisions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project", sa.String(64), nullable=False, index=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("decision", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("champion_version", sa.Integer, nullable=True),
        sa.Column("challenger_metrics", sa.JSON, nullable=False),
        sa.Column("champion_metrics", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in ("gate_decisions", "model_versions", "training_runs", "dataset_versions"):
        op.drop_table(table)
