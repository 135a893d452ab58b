"""Operations after issues 14-16 (README Observability): the approvals gauge reads a partial
index (migration 0012, built CONCURRENTLY) instead of the whole of tool_calls, and a fleet of
workers upgrading together to it does not deadlock."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, pool, text
from sqlalchemy.orm import Session as OrmSession

from agentrun.db.migrate import current_revision, head_revision, upgrade
from agentrun.db.models import Run, Session
from agentrun.stack import ensure_database
from agentrun.telemetry.worker import APPROVALS_WAITING_SQL

INDEX = "ix_tool_calls_pending_approval"


@pytest.fixture
def fresh_url(database_url: str) -> Iterator[str]:
    """A database of its own (created empty; dropped afterwards)."""
    base, _, _ = database_url.rpartition("/")
    name = f"agentrun_ops_{uuid.uuid4().hex[:10]}"
    url = f"{base}/{name}"
    ensure_database(url.replace("postgresql+psycopg://", "postgresql://"))
    yield url
    admin = create_engine(f"{base}/postgres", poolclass=pool.NullPool)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _index_state(engine: Engine) -> tuple[bool, bool, str] | None:
    """(valid, unique, predicate) of the index, or None when there is none."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT i.indisvalid, i.indisunique, pg_get_expr(i.indpred, i.indrelid) "
                "FROM pg_index i WHERE i.indexrelid = to_regclass(:n)"
            ),
            {"n": INDEX},
        ).one_or_none()
    return None if row is None else (row[0], row[1], row[2])


def _fill(engine: Engine, done: int, waiting: int) -> None:
    """One run with `done` finished tool calls and `waiting` ones waiting for approval."""
    sid, rid = f"s-{uuid.uuid4()}", f"r-{uuid.uuid4()}"
    with OrmSession(engine) as db:
        db.add(Session(id=sid))
        db.flush()
        db.add(Run(id=rid, session_id=sid, model="m"))
        db.flush()
        db.commit()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tool_calls (idempotency_key, run_id, turn, tool_call_id, name, "
                "arguments, arguments_sha256, status, is_error, attempts) "
                "SELECT :rid || g, :rid, 1, 'c' || g, 'bash', '{}', '', "
                "CASE WHEN g <= :waiting THEN 'pending_approval' ELSE 'succeeded' END, false, 0 "
                "FROM generate_series(1, :n) g"
            ),
            {"rid": rid, "waiting": waiting, "n": done + waiting},
        )
        conn.execute(text("ANALYZE tool_calls"))


def test_the_gauge_query_uses_the_partial_index(fresh_url: str) -> None:
    upgrade(fresh_url)
    engine = create_engine(fresh_url, poolclass=pool.NullPool)
    try:
        valid, unique, predicate = _index_state(engine) or (False, True, "")
        assert valid and not unique
        assert predicate == "((status)::text = 'pending_approval'::text)"
        _fill(engine, done=50_000, waiting=3)
        with engine.connect() as conn:
            plan = "\n".join(r[0] for r in conn.execute(text("EXPLAIN " + APPROVALS_WAITING_SQL)))
            assert INDEX in plan and "Seq Scan" not in plan, plan
            assert conn.execute(text(APPROVALS_WAITING_SQL)).scalar() == 3
    finally:
        engine.dispose()


def test_workers_upgrading_together_build_the_index_once(fresh_url: str) -> None:
    upgrade(fresh_url, "0011")
    engine = create_engine(fresh_url, poolclass=pool.NullPool)
    try:
        # A build that failed half-way (a cancelled upgrade) left an INVALID index by that name.
        _fill(engine, done=0, waiting=2)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            with pytest.raises(Exception, match="could not create unique index"):
                conn.execute(
                    text(
                        f"CREATE UNIQUE INDEX CONCURRENTLY {INDEX} ON tool_calls (status) "
                        "WHERE status = 'pending_approval'"
                    )
                )
        assert (_index_state(engine) or (True,))[0] is False

        # Three workers start at once: one migrates (CREATE INDEX CONCURRENTLY waits for older
        # snapshots), the others wait for the lock without holding one.
        errors: list[BaseException] = []

        def one() -> None:
            try:
                upgrade(fresh_url)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=one) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads) and errors == []
        assert current_revision(fresh_url) == head_revision() == "0012"
        assert _index_state(engine) == (True, False, "((status)::text = 'pending_approval'::text)")

        # And back: the downgrade drops it.
        from alembic import command

        from agentrun.db.migrate import alembic_config

        with engine.connect() as conn:
            cfg = alembic_config(fresh_url)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0011")
            conn.commit()
        assert _index_state(engine) is None
    finally:
        engine.dispose()
