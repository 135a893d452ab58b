"""runs.unmetered_calls: successful model calls whose endpoint reported no usage

Added after 0006 had shipped, so a database already at 0006 gets it too. A default of 0: workers
from before keep working (they never write it; their runs count none).

Revision ID: 0011
Revises: 0010 (main's head when it was written; re-chain after 0009 if that lands later)
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "runs",
        sa.Column("unmetered_calls", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("runs", "unmetered_calls")
