"""The MCP tools a run may use, recorded once when it opens (table run_mcp_tools). The first
recording wins: a retried list activity, or one on another worker that sees a changed server,
gets the recorded list back, so the run keeps one list from its start to its end."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from agentrun.db.models import Run, RunMcpTool

__all__ = ["read", "record"]


async def read(db: AsyncSession, run_id: str) -> list[RunMcpTool]:
    rows = await db.execute(
        select(RunMcpTool).where(RunMcpTool.run_id == run_id).order_by(RunMcpTool.name)
    )
    return list(rows.scalars())


async def record(
    db: AsyncSession, run_id: str, tools: Sequence[dict[str, Any]]
) -> list[RunMcpTool]:
    """Record the list unless the run has one; returns the run's recorded list."""
    # The run's row lock orders two recorders (retries on two workers): the second reads the
    # first's list instead of adding what its own listing saw.
    await db.execute(select(Run.id).where(Run.id == run_id).with_for_update())
    existing = await read(db, run_id)
    if existing or not tools:
        return existing
    stmt = insert(RunMcpTool).values([{**t, "run_id": run_id} for t in tools])
    await db.execute(stmt.on_conflict_do_nothing())
    return await read(db, run_id)
