"""Live metric of a drift report (labelled production predictions).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("drift_reports") as batch:
        batch.add_column(sa.Column("live_metric", sa.Float, nullable=True))
        batch.add_column(sa.Column("labelled_rows", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("drift_reports") as batch:
        batch.drop_column("labelled_rows")
        batch.drop_column("live_metric")
