"""web UI tables (sessions, sign-in attempts) under Alembic

The web edge used to create them itself (``create_all`` when its routes were mounted), so
an operator had no migration to review or run for them. A database where that already
happened keeps its tables: they are created here only when absent.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 20:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _exists(name: str) -> bool:
    return sa.inspect(op.get_bind()).has_table(name)


def upgrade() -> None:
    if not _exists("web_sessions"):
        op.create_table(
            "web_sessions",
            sa.Column("token_hash", sa.String(length=64), nullable=False),
            sa.Column("account_id", sa.Integer(), nullable=False),
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("token_hash"),
        )
        op.create_index("ix_web_sessions_account_id", "web_sessions", ["account_id"], unique=False)
    if not _exists("web_login_attempts"):
        op.create_table(
            "web_login_attempts",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("email", sa.String(length=254), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("success", sa.Boolean(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_web_login_attempts_email_at", "web_login_attempts", ["email", "at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_web_login_attempts_email_at", table_name="web_login_attempts")
    op.drop_table("web_login_attempts")
    op.drop_index("ix_web_sessions_account_id", table_name="web_sessions")
    op.drop_table("web_sessions")
