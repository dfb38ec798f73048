"""What the retraining a drift report started did with it (folded in, skipped and why).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("drift_reports") as batch:
        batch.add_column(sa.Column("outcome", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("drift_reports") as batch:
        batch.drop_column("outcome")
