"""The engine, its sessions, and the one generic write: an insert that happens once.

Every write of the store is safe to repeat: the row carries a deterministic idempotency key, the
insert is ON CONFLICT DO NOTHING, and a repeat returns the row already there and changes nothing
(dbos-transact-py keeps its step records the same way).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import event, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

T = TypeVar("T")

# A pooled connection that sat unused this long is pinged before it is handed out (a restarted
# or failed-over server leaves the pool's connections dead); one in steady use is not: a ping
# on every checkout (pool_pre_ping) was a round trip and about 0.2 ms of the worker's CPU per
# transaction, 22 transactions per agent run (bench/burst.py).
IDLE_PING_S = 5.0


class NotFoundError(LookupError):
    """A run, session or tool call that the caller named does not exist."""


def idempotency_key(*parts: object) -> str:
    """The deterministic key of a write: run id, turn, tool_call_id, attempt, ... joined. The
    keys are stored and a retried write after an upgrade must find them: never change one."""
    return ":".join(str(p) for p in parts)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Engine:
    """One SQLAlchemy engine (psycopg 3) and its sessions."""

    def __init__(self, engine: AsyncEngine, libpq_url: str) -> None:
        self.engine = engine
        # For psycopg connections of its own (LISTEN): the same server, without the dialect.
        self.libpq_url = libpq_url
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @staticmethod
    def create(
        sqlalchemy_url: str,
        *,
        pool_size: int = 10,
        max_overflow: int | None = None,
        idle_ping_s: float = IDLE_PING_S,
    ) -> tuple[AsyncEngine, str]:
        """`max_overflow`: connections beyond the pool in a burst (default: pool_size); 0 keeps
        the process at pool_size (the HTTP server: pool + the hub's LISTEN connection)."""
        engine = create_async_engine(
            sqlalchemy_url,
            pool_size=pool_size,
            max_overflow=pool_size if max_overflow is None else max_overflow,
            # An SQL error's text would otherwise carry the bound values (a tool's output, a
            # prompt) into Temporal failures, workflow history and logs.
            hide_parameters=True,
        )
        _ping_when_idle(engine, idle_ping_s)
        return engine, sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)

    async def close(self) -> None:
        await self.engine.dispose()

    def session(self) -> AsyncSession:
        return self._sessions()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed at the end, rolled back on an error."""
        async with self._sessions() as db, db.begin():
            yield db


def _ping_when_idle(engine: AsyncEngine, idle_s: float) -> None:
    """Ping a connection at checkout if it was idle in the pool for idle_s or longer; a dead
    one is replaced (DisconnectionError makes the pool connect anew). A connection that dies
    while in steady use fails its statement, and the pool then drops every connection it held
    before (SQLAlchemy's disconnect handling); the step's retry gets a fresh one."""
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    @event.listens_for(pool, "checkin")
    def _idle_from(dbapi_connection: Any, record: Any) -> None:
        record.info["agentrun_idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.pop("agentrun_idle_since", None)
        if since is None or time.monotonic() - since < idle_s:
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("a pooled connection failed its ping") from exc
        if not alive:
            raise DisconnectionError("a pooled connection failed its ping")


async def insert_once(
    db: AsyncSession, model: type[T], values: dict[str, Any], *conflict: Any
) -> tuple[T, bool]:
    """INSERT ... ON CONFLICT (conflict columns) DO NOTHING; returns (row, inserted), the row
    being the one already there when the insert was a repeat."""
    keys = [c.key for c in conflict]
    stmt = (
        insert(model).values(**values).on_conflict_do_nothing(index_elements=keys).returning(model)
    )
    row = (await db.execute(stmt)).scalar_one_or_none()
    if row is not None:
        return row, True
    where = [getattr(model, k) == values[k] for k in keys]
    existing = (await db.execute(select(model).where(*where))).scalar_one()
    return existing, False
