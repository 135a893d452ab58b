"""The event log: append with gapless per-run seqs, read from a cursor (following live is
agentrun.store.hub's).

A run's events get seqs allocated under the run row's lock (SELECT ... FOR UPDATE) in the
inserting transaction, so seqs are in commit order and a rolled-back transaction gives its seqs
back: a reader of `seq > cursor` never skips a late commit. Each commit sends NOTIFY so
followers wake at once; polling is the fallback. Writers pass payload models of
agentrun.protocol.events; an event with a key is appended once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from agentrun.db.models import Run, RunEvent, RunStatus
from agentrun.protocol.events import EventData, EventType
from agentrun.protocol.names import NOTIFY_CHANNEL
from agentrun.store import webhooks
from agentrun.store.engine import Engine, NotFoundError, idempotency_key


@dataclass(frozen=True)
class EventIn:
    """An event to append; `key` makes the append idempotent. Build it with `EventIn.of` from
    a payload model of agentrun.protocol.events, which knows its type."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    key: str | None = None

    @classmethod
    def of(cls, payload: EventData, key: str | None = None) -> EventIn:
        # exclude_unset: the stored JSON has exactly the fields the writer gave.
        return cls(payload.TYPE.value, payload.model_dump(mode="json", exclude_unset=True), key)


def event_key(event_type: EventType, *parts: object) -> str:
    """The idempotency key of an event that happens once per thing: `<type>:<parts>`. These
    strings are stored, and a retried write after an upgrade must find them: never change."""
    return idempotency_key(event_type.value, *parts)


async def lock_run(db: AsyncSession, run_id: str) -> Run:
    """The run row, locked until the transaction ends: the seq allocator of its events."""
    run = (
        await db.execute(select(Run).where(Run.id == run_id).with_for_update())
    ).scalar_one_or_none()
    if run is None:
        raise NotFoundError(f"no run with id {run_id!r}")
    return run


async def append_locked(db: AsyncSession, run: Run, events: Sequence[EventIn]) -> list[RunEvent]:
    """Append events to a run whose row the caller has locked (`lock_run`). An event whose key
    is already there is returned as recorded and not appended again; returns them in seq order."""
    keys = [e.key for e in events if e.key is not None]
    existing: dict[str, RunEvent] = {}
    if keys:
        rows = await db.execute(
            select(RunEvent).where(RunEvent.run_id == run.id, RunEvent.idempotency_key.in_(keys))
        )
        existing = {r.idempotency_key: r for r in rows.scalars() if r.idempotency_key}
    out: list[RunEvent] = []
    new_rows: list[dict[str, Any]] = []
    seq = run.last_event_seq
    seen: set[str] = set()
    for e in events:
        if e.key is not None and e.key in existing:
            out.append(existing[e.key])
            continue
        if e.key is not None and e.key in seen:
            continue
        seq += 1
        if e.key is not None:
            seen.add(e.key)
        new_rows.append(
            {"run_id": run.id, "seq": seq, "type": e.type, "data": e.data, "idempotency_key": e.key}
        )
    if new_rows:
        inserted = (await db.execute(insert(RunEvent).returning(RunEvent), new_rows)).scalars()
        added = inserted.all()
        out.extend(added)
        run.last_event_seq = seq
        await db.flush()
        # The webhook outbox rows of these events, in this transaction (store/webhooks.py).
        await webhooks.enqueue(db, run, added)
        # Delivered at commit, so a woken follower always finds the rows.
        await db.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": NOTIFY_CHANNEL, "payload": f"{run.id}:{seq}"},
        )
    out.sort(key=lambda r: r.seq)
    return out


async def append(db: AsyncSession, run_id: str, events: Sequence[EventIn]) -> list[RunEvent]:
    """Lock the run and append: the general path, any number of events, keys honoured."""
    return await append_locked(db, await lock_run(db, run_id), events)


_STREAM_APPEND = text(
    """
    WITH r AS (
        UPDATE runs SET last_event_seq = last_event_seq + 1
        WHERE id = :run_id
        RETURNING id, last_event_seq
    ), ins AS (
        INSERT INTO run_events (run_id, seq, type, data, created_at)
        SELECT r.id, r.last_event_seq, :type, CAST(:data AS jsonb), now() FROM r
        RETURNING run_id, seq
    )
    SELECT ins.seq FROM ins, LATERAL (SELECT pg_notify(:channel, ins.run_id || ':' || ins.seq)) n
    """
)


async def append_stream(conn: AsyncConnection, run_id: str, payload: EventData) -> int:
    """Append one event without an idempotency key in a single statement; returns its seq.

    The hot path of streaming (message.delta): the UPDATE takes the run row's lock and
    allocates the seq, the INSERT and the NOTIFY ride in the same statement, so a delta costs
    one round trip instead of five, with the same gapless, commit-ordered seqs.
    """
    event = EventIn.of(payload)
    params = {
        "run_id": run_id,
        "type": event.type,
        "data": json.dumps(event.data, ensure_ascii=False),
        "channel": NOTIFY_CHANNEL,
    }
    seq = (await conn.execute(_STREAM_APPEND, params)).scalar_one_or_none()
    if seq is None:
        raise NotFoundError(f"no run with id {run_id!r}")
    return int(seq)


async def read(
    db: AsyncSession, run_id: str, after_seq: int = 0, limit: int = 1000
) -> list[RunEvent]:
    rows = await db.execute(
        select(RunEvent)
        .where(RunEvent.run_id == run_id, RunEvent.seq > after_seq)
        .order_by(RunEvent.seq)
        .limit(limit)
    )
    return list(rows.scalars())


async def follow_direct(
    store: Engine,
    run_id: str,
    after_seq: int = 0,
    *,
    poll_interval: float = 1.0,
    until_terminal: bool = True,
) -> AsyncGenerator[RunEvent, None]:
    """Yield every event after `after_seq` in seq order, then new ones as they commit.

    The old follower, one LISTEN connection and one query per notification for each follower:
    kept only for the benchmark's comparison (bench/hub_latency.py). Everything else follows
    through agentrun.store.hub.EventHub (Repository.follow_events). NOTIFY wakes the follower
    at once; polling every `poll_interval` is the fallback for a lost notification or a
    dropped listener connection. Ends after the run reaches a terminal status and its last
    event has been yielded.
    """
    cursor = after_seq
    listener = await _listen(store.libpq_url)
    try:
        while True:
            async with store.session() as db:
                batch = await read(db, run_id, cursor)
            for event in batch:
                cursor = event.seq
                yield event
            if batch:
                continue
            if until_terminal and await _ended_at(store, run_id, cursor):
                return
            await _wait_notify(listener, run_id, poll_interval)
    finally:
        if listener is not None:
            await listener.close()


async def _listen(libpq_url: str) -> psycopg.AsyncConnection[Any] | None:
    try:
        listener = await psycopg.AsyncConnection.connect(libpq_url, autocommit=True)
    except psycopg.OperationalError:
        return None
    try:
        await listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
    except psycopg.OperationalError:
        await listener.close()
        return None
    return listener


async def _ended_at(store: Engine, run_id: str, cursor: int) -> bool:
    """Whether the run has ended and the cursor has reached its last event."""
    async with store.session() as db:
        run = await db.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"no run with id {run_id!r}")
    return RunStatus(run.status).terminal and run.last_event_seq <= cursor


async def _wait_notify(
    listener: psycopg.AsyncConnection[Any] | None, run_id: str, timeout: float
) -> None:
    if listener is None:
        await asyncio.sleep(timeout)
        return
    prefix = f"{run_id}:"
    try:
        async for note in listener.notifies(timeout=timeout):
            if note.payload.startswith(prefix):
                return
    except psycopg.OperationalError:
        await asyncio.sleep(timeout)
