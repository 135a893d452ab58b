"""The tool catalog: which tools the workers of a task queue offer.

A worker writes its tool names when it starts; a client (the CLI, an app) reads them to refuse
a run that names a tool no worker has before it starts anything. Names are only ever added or
refreshed: during a rolling deploy two builds may offer different tools, and a name some
worker still offers must not be refused. The worker's check when it opens a run decides.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from agentrun.db.models import ToolCatalogEntry
from agentrun.store.engine import utcnow


async def publish(db: AsyncSession, task_queue: str, names: Iterable[str]) -> None:
    rows = [{"task_queue": task_queue, "name": name} for name in sorted(set(names))]
    if not rows:
        return
    stmt = insert(ToolCatalogEntry).values(rows)
    await db.execute(
        stmt.on_conflict_do_update(
            index_elements=[ToolCatalogEntry.task_queue, ToolCatalogEntry.name],
            set_={"updated_at": utcnow()},
        )
    )


async def names(db: AsyncSession, task_queue: str) -> set[str]:
    rows = await db.execute(
        select(ToolCatalogEntry.name).where(ToolCatalogEntry.task_queue == task_queue)
    )
    return set(rows.scalars())
