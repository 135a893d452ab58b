"""What the double-texting tests share: reads of the queue, the runs and the messages of a
session, and bounded waits on them."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select

from agentrun.db.models import Message, QueuedMessage, Run
from agentrun.protocol.statuses import RunStatus
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer

BOUND = 60


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = BOUND) -> Any:
    """The first truthy value of `check`, polled; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout} s: {check}"
        await asyncio.sleep(0.1)


async def queue_rows(repo: Repository, session_id: str) -> list[QueuedMessage]:
    async with repo.session() as db:
        rows = await db.execute(
            select(QueuedMessage)
            .where(QueuedMessage.session_id == session_id)
            .order_by(QueuedMessage.position)
        )
        return list(rows.scalars())


async def session_runs(repo: Repository, session_id: str) -> list[Run]:
    async with repo.session() as db:
        rows = await db.execute(
            select(Run).where(Run.session_id == session_id).order_by(Run.created_at)
        )
        return list(rows.scalars())


async def messages_of(repo: Repository, run_id: str) -> list[Message]:
    return await repo.run_messages(run_id)


async def ended(repo: Repository, run_id: str, timeout: float = BOUND) -> Run:
    """The run once its record says it ended (bounded)."""

    async def check() -> Run | None:
        run = await repo.find_run(run_id)
        return run if run is not None and RunStatus(run.status).terminal else None

    result: Run = await eventually(check, timeout)
    return result


async def status_is(repo: Repository, run_id: str, *statuses: str) -> Run:
    async def check() -> Run | None:
        run = await repo.find_run(run_id)
        return run if run is not None and run.status in statuses else None

    result: Run = await eventually(check)
    return result


def assert_one_at_a_time(runs: list[Run]) -> None:
    """No two runs of the session were active at once: each opened after the one before it
    had finished."""
    for before, after in itertools.pairwise(runs):
        assert before.finished_at is not None, before.id
        assert after.created_at >= before.finished_at, (before.id, after.id)


def sent_to_model(model: OfflineModelServer, key: str) -> list[list[dict[str, Any]]]:
    """The messages of every model request made for prompts containing `key`."""
    return [list(r.body.get("messages") or []) for r in model.requests_for(key)]
