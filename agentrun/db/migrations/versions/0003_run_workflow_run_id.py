"""runs.workflow_run_id: the workflow execution that opened the run

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: runs opened before this revision have none, and are claimed by the first
    # execution that opens them again (see Repository.open_run).
    op.add_column("runs", sa.Column("workflow_run_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "workflow_run_id")
