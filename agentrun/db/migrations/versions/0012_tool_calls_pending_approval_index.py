"""A partial index of the tool calls that wait for approval: the approvals gauge
(agentrun/telemetry/worker.py, every 15 s per worker) counts them without reading the table.

Built CONCURRENTLY, outside the migration's transaction (an autocommit block): a fleet's
tool_calls is never locked against writes while it builds, only scanned. A build that failed
half-way (a cancelled upgrade) leaves an INVALID index, which is dropped and built again.
Additive: old workers never name it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

INDEX = "ix_tool_calls_pending_approval"
# The gauge's WHERE, word for word (tests/test_ops_hardening.py compares the two).
PREDICATE = "status = 'pending_approval'"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        valid = (
            op.get_bind()
            .execute(
                sa.text("SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(:n)"),
                {"n": INDEX},
            )
            .scalar()
        )
        if valid is False:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
        op.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON tool_calls (run_id) "
            f"WHERE {PREDICATE}"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
