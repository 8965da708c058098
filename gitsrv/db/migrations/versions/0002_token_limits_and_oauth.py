"""Token expiry, limits and last use; OAuth2 applications; failed authentications

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oauth_apps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_oauth_apps_client_id", "oauth_apps", ["client_id"], unique=True)

    with op.batch_alter_table("tokens") as batch_op:
        batch_op.add_column(sa.Column("repo_limits", sa.Text(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("ref_limits", sa.Text(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("app_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_foreign_key("fk_tokens_app_id", "oauth_apps", ["app_id"], ["id"])
        batch_op.create_index("ix_tokens_app_id", ["app_id"], unique=False)

    op.create_table(
        "auth_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("remote_addr", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_auth_failures_addr_time", "auth_failures", ["remote_addr", "created_at"])
    op.create_index("ix_auth_failures_created_at", "auth_failures", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_auth_failures_created_at", table_name="auth_failures")
    op.drop_index("ix_auth_failures_addr_time", table_name="auth_failures")
    op.drop_table("auth_failures")
    with op.batch_alter_table("tokens") as batch_op:
        batch_op.drop_index("ix_tokens_app_id")
        batch_op.drop_constraint("fk_tokens_app_id", type_="foreignkey")
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("app_id")
        batch_op.drop_column("ref_limits")
        batch_op.drop_column("repo_limits")
    op.drop_index("ix_oauth_apps_client_id", table_name="oauth_apps")
    op.drop_table("oauth_apps")
