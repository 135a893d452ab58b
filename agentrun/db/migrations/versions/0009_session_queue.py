"""double-texting: a session's default policy, queued messages, message states

`sessions.if_busy`: what a new message does when the session has an active run (NULL: reject,
as before). `queued_messages`: a message accepted while the session was busy (or about to be),
started as its run, in order, by the session's queue workflow. `messages.state`: NULL for an
ordinary message, `interrupted` for the partial answer of a run cancelled while it streamed,
`rolled_back` for a message of a run a newer message rolled back (kept, never sent to a model).

Additive only: workers from before this revision neither read nor write these columns.

Revision ID: 0009
Revises: 0010
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("if_busy", sa.String(length=16), nullable=True))
    op.add_column("messages", sa.Column("state", sa.String(length=16), nullable=True))
    op.create_table(
        "queued_messages",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("session_id", sa.String(length=200), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False, server_default="default"),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("config", postgresql.JSONB(), nullable=False),
        sa.Column("policy", sa.String(length=16), nullable=False),
        sa.Column("preempt", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("supersedes_run_id", sa.String(length=200), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False, server_default="queued"),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name="fk_queued_messages_session_id_sessions"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_queued_messages"),
        sa.UniqueConstraint("run_id", name="uq_queued_messages_run_id"),
        sa.UniqueConstraint(
            "session_id", "position", name="uq_queued_messages_session_id_position"
        ),
    )
    op.create_index(
        "ix_queued_messages_session_id_state", "queued_messages", ["session_id", "state"]
    )


def downgrade() -> None:
    op.drop_index("ix_queued_messages_session_id_state", table_name="queued_messages")
    op.drop_table("queued_messages")
    op.drop_column("messages", "state")
    op.drop_column("sessions", "if_busy")
