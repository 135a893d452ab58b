"""The engine, its sessions, and the one generic write: an insert that happens once.

Every write of the store is safe to repeat: the row carries a deterministic idempotency key, the
insert is ON CONFLICT DO NOTHING, and a repeat returns the row already there and changes nothing
(dbos-transact-py keeps its step records the same way).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

T = TypeVar("T")


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
    def create(sqlalchemy_url: str, *, pool_size: int = 10) -> tuple[AsyncEngine, str]:
        engine = create_async_engine(
            sqlalchemy_url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            # An SQL error's text would otherwise carry the bound values (a tool's output, a
            # prompt) into Temporal failures, workflow history and logs.
            hide_parameters=True,
        )
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
