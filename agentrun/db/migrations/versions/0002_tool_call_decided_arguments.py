"""tool_calls.decided_arguments: the arguments a person approved with edits

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tool_calls", sa.Column("decided_arguments", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("tool_calls", "decided_arguments")
