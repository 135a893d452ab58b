"""Operations after issues 14-16 (README Observability): the approvals gauge reads a partial
index (migration 0012, built CONCURRENTLY) instead of the whole of tool_calls, and a fleet of
workers upgrading together to it does not deadlock."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from alembic import command
from pydantic import ValidationError
from sqlalchemy import Engine, create_engine, pool, text
from sqlalchemy.orm import Session as OrmSession
from temporalio.client import ScheduleActionStartWorkflow
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.contracts.retention import RetentionInput
from agentrun.db.migrate import alembic_config, current_revision, head_revision, upgrade
from agentrun.db.models import Run, Session
from agentrun.retention import sync_retention_schedule
from agentrun.settings import Settings
from agentrun.stack import ensure_database
from agentrun.store import Repository
from agentrun.telemetry.worker import APPROVALS_WAITING_SQL
from workflows.retention import SessionRetentionWorkflow

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
        with engine.connect() as conn:
            cfg = alembic_config(fresh_url)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0011")
            conn.commit()
        assert _index_state(engine) is None
    finally:
        engine.dispose()


# -- webhook delivery retention ------------------------------------------------------------


async def _delivery(repo: Repository, status: str, age_days: float) -> str:
    did = f"d-{uuid.uuid4().hex}"
    async with repo.transaction() as db:
        await db.execute(
            text(
                "INSERT INTO webhook_deliveries (id, tenant, url, run_id, session_id, event_seq, "
                "event_type, payload, status, created_at, updated_at) VALUES (:id, 'default', "
                "'https://example.invalid/h', 'r', 's', 1, 'run.finished', '{}', :st, "
                "now() - make_interval(secs => :s), now() - make_interval(secs => :s))"
            ),
            {"id": did, "st": status, "s": age_days * 86400},
        )
    return did


async def _left(repo: Repository, ids: list[str]) -> set[str]:
    async with repo.session() as db:
        found = await db.execute(
            text("SELECT id FROM webhook_deliveries WHERE id = ANY(:ids)"), {"ids": ids}
        )
        return set(found.scalars())


async def test_ended_webhook_deliveries_past_the_setting_are_pruned_in_batches(
    temporal_env: WorkflowEnvironment, settings: Settings, worker: Worker, repo: Repository
) -> None:
    old_ok = [await _delivery(repo, "delivered", 20) for _ in range(3)]
    old_failed = await _delivery(repo, "failed", 15)
    kept = [
        await _delivery(repo, "pending", 30),  # still being delivered: never pruned
        await _delivery(repo, "delivered", 13),  # recent
        await _delivery(repo, "failed", 1),
    ]
    summary = await temporal_env.client.execute_workflow(
        SessionRetentionWorkflow.run,
        RetentionInput(delivery_days=14, delivery_batch=2),
        id=f"retention-{uuid.uuid4()}",
        task_queue=settings.task_queue,
        execution_timeout=timedelta(seconds=60),
    )
    assert await _left(repo, [*old_ok, old_failed, *kept]) == set(kept)
    # Batches of 2: at least two full ones and a short one; no session was looked at.
    assert summary.deliveries_deleted >= 4 and summary.batches == 0 and summary.deleted == 0
    # Nothing left to prune: one short batch.
    again = await temporal_env.client.execute_workflow(
        SessionRetentionWorkflow.run,
        RetentionInput(delivery_days=14, delivery_batch=2),
        id=f"retention-{uuid.uuid4()}",
        task_queue=settings.task_queue,
        execution_timeout=timedelta(seconds=60),
    )
    assert again.deliveries_deleted == 0
    assert await _left(repo, kept) == set(kept)


def test_the_retention_settings_validate() -> None:
    assert Settings().webhook_delivery_retention_days == 14
    assert Settings(webhook_delivery_retention_days=0).webhook_delivery_retention_days == 0
    with pytest.raises(ValidationError):
        Settings(webhook_delivery_retention_days=-1)
    with pytest.raises(ValidationError):
        RetentionInput(delivery_days=0)


async def test_the_schedule_prunes_deliveries_by_default_and_goes_when_all_is_off(
    temporal_env: WorkflowEnvironment, settings: Settings
) -> None:
    client = temporal_env.client
    tq = f"{settings.task_queue}-{uuid.uuid4().hex[:6]}"
    only_deliveries = settings.model_copy(update={"task_queue": tq, "session_retention_days": None})
    sid = await sync_retention_schedule(client, only_deliveries)
    assert sid is not None
    action = (await client.get_schedule_handle(sid).describe()).schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    [arg] = action.args
    inp = client.data_converter.payload_converter.from_payloads([arg], [RetentionInput])[0]
    assert (inp.idle_days, inp.delivery_days) == (None, 14)  # type: ignore[union-attr]
    off = only_deliveries.model_copy(update={"webhook_delivery_retention_days": 0})
    assert await sync_retention_schedule(client, off) is None
    with pytest.raises(RPCError):
        await client.get_schedule_handle(sid).describe()
