"""Drift reports of the monitor DAG.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drift_reports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project", sa.String(64), nullable=False, index=True),
        sa.Column("model_version", sa.Integer, nullable=False),
        sa.Column("windows", sa.JSON, nullable=False),
        sa.Column("last_window", sa.String(40), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("drifted_features", sa.JSON, nullable=False),
        sa.Column("scores", sa.JSON, nullable=False),
        sa.Column("prediction_drift", sa.Float, nullable=True),
        sa.Column("fired", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("lakefs_uri", sa.Text, nullable=False),
        sa.Column("mlflow_run_id", sa.String(64), nullable=False),
        sa.Column("dag_run_id", sa.String(250), nullable=False),
        sa.Column("handled_by", sa.String(250), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("drift_reports")
