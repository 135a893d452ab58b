"""tool_catalog: the tools the workers of a task queue offer, so a client can check a run's
config before it starts one

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tool_catalog",
        sa.Column("task_queue", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("task_queue", "name", name="pk_tool_catalog"),
    )


def downgrade() -> None:
    op.drop_table("tool_catalog")
