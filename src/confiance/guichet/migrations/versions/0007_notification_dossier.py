"""notifications: the dossier they are about, so a salarié sees only their dossiers' news

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("candidature_id", sa.Integer(), nullable=True))
        batch_op.create_index("ix_notifications_candidature_id", ["candidature_id"])


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_candidature_id")
        batch_op.drop_column("candidature_id")
