"""Deployments: which runtime serves (the compiled ONNX graph or scikit-learn) and why.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("runtime", sa.String(16), nullable=False, server_default=""))
        batch.add_column(sa.Column("runtime_reason", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("runtime_reason")
        batch.drop_column("runtime")
