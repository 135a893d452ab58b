"""The store's connection pool pings a connection only after it sat idle (issue 12 item 9):
a dead idle connection is replaced before use; one in steady use costs no ping, and if it dies
its statement fails once and the pool starts afresh."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from agentrun.store.engine import Engine


async def _backend_pid(engine: Engine) -> int:
    async with engine.transaction() as db:
        return int((await db.execute(text("select pg_backend_pid()"))).scalar_one())


async def _terminate(libpq_url: str, pid: int) -> None:
    async with await psycopg.AsyncConnection.connect(libpq_url, autocommit=True) as conn:
        await conn.execute("select pg_terminate_backend(%s)", [pid])


async def test_an_idle_connection_that_died_is_replaced_before_use(database_url: str) -> None:
    # idle_ping_s=0: every connection coming back from the pool counts as idle.
    engine = Engine(*Engine.create(database_url, pool_size=1, idle_ping_s=0))
    try:
        pid = await _backend_pid(engine)
        await _terminate(engine.libpq_url, pid)
        again = await _backend_pid(engine)  # no error: the ping found it dead
        assert again != pid
    finally:
        await engine.close()


async def test_a_connection_in_steady_use_is_not_pinged(database_url: str) -> None:
    engine = Engine(*Engine.create(database_url, pool_size=1, idle_ping_s=3600))
    try:
        pid = await _backend_pid(engine)
        await _terminate(engine.libpq_url, pid)
        # Not pinged: the dead connection is used and its statement fails...
        with pytest.raises(DBAPIError) as err:
            await _backend_pid(engine)
        assert err.value.connection_invalidated
        # ... and the pool connects anew for the next one.
        assert await _backend_pid(engine) != pid
    finally:
        await engine.close()
