"""runs.parent_run_id: a sub-agent's run points at the run that started it

Revision ID: 0008
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable and without a default: every run before this revision, and every run a person
    # or app starts, has no parent; older workers keep writing runs without it.
    op.add_column("runs", sa.Column("parent_run_id", sa.String(length=200), nullable=True))
    op.create_index("ix_runs_parent_run_id", "runs", ["parent_run_id"])


def downgrade() -> None:
    op.drop_index("ix_runs_parent_run_id", table_name="runs")
    op.drop_column("runs", "parent_run_id")
