"""Webhook target filters, address policy and failure tracking; event skip reasons

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_targets") as batch_op:
        batch_op.add_column(sa.Column("repo_filters", sa.Text(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("ref_filters", sa.Text(), nullable=False, server_default="[]"))
        batch_op.add_column(
            sa.Column("allow_unsafe_address", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("disabled_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("events") as batch_op:
        batch_op.add_column(sa.Column("skip_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch_op:
        batch_op.drop_column("skip_reason")
    with op.batch_alter_table("webhook_targets") as batch_op:
        batch_op.drop_column("disabled_reason")
        batch_op.drop_column("consecutive_failures")
        batch_op.drop_column("allow_unsafe_address")
        batch_op.drop_column("ref_filters")
        batch_op.drop_column("repo_filters")
