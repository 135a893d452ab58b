"""cost ledger and budgets

Every llm_calls row gets its cost (NUMERIC: exact dollars, NULL when the model has no known
price or the attempt reported no usage) and its cached and reasoning token counts; runs keep
their rollups (written in the same transaction as each llm_calls row); a session may carry a
budget. All columns are nullable or have defaults: workers from before keep working.

NUMERIC without a scale: a price of $0.0375 per million tokens costs 0.0000000375 dollars a
token, more decimal places than NUMERIC(18,9) keeps; unconstrained NUMERIC is exact.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _count(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")


def upgrade() -> None:
    op.add_column("llm_calls", sa.Column("cost_usd", sa.Numeric(), nullable=True))
    op.add_column("llm_calls", sa.Column("cached_tokens", sa.Integer(), nullable=True))
    op.add_column("llm_calls", sa.Column("reasoning_tokens", sa.Integer(), nullable=True))
    op.create_index("ix_llm_calls_created_at", "llm_calls", ["created_at"])
    op.add_column("runs", sa.Column("cost_usd", sa.Numeric(), nullable=True))
    op.add_column("runs", _count("cached_tokens"))
    op.add_column("runs", _count("reasoning_tokens"))
    op.add_column("runs", _count("unpriced_calls"))
    op.add_column("sessions", sa.Column("max_cost_usd", sa.Numeric(), nullable=True))
    op.add_column("sessions", sa.Column("max_total_tokens", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("sessions", "max_total_tokens")
    op.drop_column("sessions", "max_cost_usd")
    for name in ("unpriced_calls", "reasoning_tokens", "cached_tokens", "cost_usd"):
        op.drop_column("runs", name)
    op.drop_index("ix_llm_calls_created_at", table_name="llm_calls")
    for name in ("reasoning_tokens", "cached_tokens", "cost_usd"):
        op.drop_column("llm_calls", name)
