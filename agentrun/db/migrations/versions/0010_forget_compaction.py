"""forgetting and compaction: sessions.deleted_at (the tombstone of a deleted session),
messages.kind and messages.covers_to_id (a summary message and the last message it covers)

Revision ID: 0010
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns only: workers of the previous release keep running against this schema.
    op.add_column("sessions", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("messages", sa.Column("kind", sa.String(length=16), nullable=True))
    op.add_column("messages", sa.Column("covers_to_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("messages", "covers_to_id")
    op.drop_column("messages", "kind")
    op.drop_column("sessions", "deleted_at")
