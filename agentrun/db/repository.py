"""The functions that activities (and the CLI) call to read and write the store.

Every write is safe to repeat: the row carries a deterministic idempotency key, the insert is
ON CONFLICT DO NOTHING, and a repeat returns the row that is already there and changes nothing.
Run statuses only move forward, and run events get a per-run seq that is gapless and in commit
order because it is allocated under the run row's lock in the inserting transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from agentrun.db.models import (
    LlmCall,
    Message,
    Run,
    RunEvent,
    RunStatus,
    Session,
    ToolCall,
    ToolCallStatus,
)
from agentrun.protocol.events import (
    EventData,
    EventType,
    LlmUsageData,
    MessageCompletedData,
    RunStatusData,
    ToolCallData,
    ToolDecidedData,
    ToolResultData,
    ToolResultRequestedData,
    ToolWaitData,
)

NOTIFY_CHANNEL = "agentrun_events"
# llm_calls statuses that spend a turn's model budget; "db_error" (the database failed before
# the model was called) does not.
MODEL_ATTEMPT_STATUSES = ("ok", "error", "lost")
T = TypeVar("T")


class NotFoundError(LookupError):
    """A run, session or tool call that the caller named does not exist."""


class SessionBusyError(RuntimeError):
    """A second run was started on a session while another run holds it."""

    def __init__(self, session_id: str, active_run_id: str) -> None:
        super().__init__(
            f"session {session_id!r} already has an active run {active_run_id!r}; wait for it "
            "to finish or cancel it, then start the new run"
        )
        self.session_id = session_id
        self.active_run_id = active_run_id


class RunEndedError(RuntimeError):
    """A run that already ended was opened again (a closed run id started again)."""

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"run {run_id!r} already ended ({status}); start a new run id")
        self.run_id = run_id
        self.status = status


class RunOwnedError(RuntimeError):
    """A run was opened by one workflow execution and another execution tried to drive it."""

    def __init__(self, run_id: str, owner: str) -> None:
        super().__init__(
            f"run {run_id!r} was opened by another execution of its workflow ({owner}) and "
            "cannot be driven by this one; start a new run id"
        )
        self.run_id = run_id
        self.owner = owner


def idempotency_key(*parts: object) -> str:
    """The deterministic key of a write: run id, turn, tool_call_id, attempt, ... joined."""
    return ":".join(str(p) for p in parts)


def sha256_text(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


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


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Repository:
    """Async access to the agentrun store over one SQLAlchemy engine (psycopg 3)."""

    def __init__(self, engine: AsyncEngine, libpq_url: str) -> None:
        self.engine = engine
        self.libpq_url = libpq_url
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def connect(cls, sqlalchemy_url: str, *, pool_size: int = 10) -> Repository:
        engine = create_async_engine(
            sqlalchemy_url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            # An SQL error's text would otherwise carry the bound values (a tool's output, a
            # prompt) into Temporal failures, workflow history and logs.
            hide_parameters=True,
        )
        libpq_url = sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)
        return cls(engine, libpq_url)

    async def close(self) -> None:
        await self.engine.dispose()

    def session(self) -> AsyncSession:
        return self._sessions()

    # ---------------------------------------------------------------------------------------
    # generic idempotent insert

    @staticmethod
    async def _insert_once(
        db: AsyncSession, model: type[T], values: dict[str, Any], *conflict: Any
    ) -> tuple[T, bool]:
        """INSERT ... ON CONFLICT DO NOTHING; returns (row, inserted)."""
        keys = [c.key for c in conflict]
        stmt = (
            insert(model)
            .values(**values)
            .on_conflict_do_nothing(index_elements=keys)
            .returning(model)
        )
        row = (await db.execute(stmt)).scalar_one_or_none()
        if row is not None:
            return row, True
        where = [getattr(model, k) == values[k] for k in keys]
        existing = (await db.execute(select(model).where(*where))).scalar_one()
        return existing, False

    # ---------------------------------------------------------------------------------------
    # sessions and runs

    async def ensure_session(
        self, session_id: str, metadata: dict[str, Any] | None = None
    ) -> Session:
        async with self.session() as db, db.begin():
            row, _ = await self._insert_once(
                db, Session, {"id": session_id, "metadata_": metadata or {}}, Session.id
            )
            return row

    async def create_run(
        self,
        run_id: str,
        session_id: str,
        model: str,
        config: dict[str, Any] | None = None,
        *,
        claim_session: bool = False,
        workflow_run_id: str | None = None,
    ) -> Run:
        """Create the run row (and its session); a repeat returns the existing run.

        With claim_session, the session is taken by this run, and a session already held by
        another run that has not ended raises SessionBusyError and writes nothing.
        """
        async with self.session() as db, db.begin():
            run, _ = await self._create_run(
                db,
                run_id,
                session_id,
                model,
                config or {},
                claim_session=claim_session,
                workflow_run_id=workflow_run_id,
            )
            return run

    async def _create_run(
        self,
        db: AsyncSession,
        run_id: str,
        session_id: str,
        model: str,
        config: dict[str, Any],
        *,
        claim_session: bool,
        workflow_run_id: str | None = None,
    ) -> tuple[Run, bool]:
        """Insert the run (and its session) unless it exists; returns (run, created)."""
        await self._insert_once(db, Session, {"id": session_id, "metadata_": {}}, Session.id)
        existing = await db.get(Run, run_id)
        if existing is not None:
            if existing.session_id != session_id:
                raise ValueError(
                    f"run {run_id!r} already exists in session {existing.session_id!r}"
                )
            return existing, False
        if claim_session:
            await self._claim_session(db, session_id, run_id)
        return await self._insert_once(
            db,
            Run,
            {
                "id": run_id,
                "session_id": session_id,
                "model": model,
                "config": config,
                "status": RunStatus.QUEUED.value,
                "workflow_run_id": workflow_run_id,
            },
            Run.id,
        )

    @staticmethod
    async def _lock_run(db: AsyncSession, run_id: str) -> Run:
        run = (
            await db.execute(select(Run).where(Run.id == run_id).with_for_update())
        ).scalar_one_or_none()
        if run is None:
            raise NotFoundError(f"no run with id {run_id!r}")
        return run

    @staticmethod
    async def _lock_tool_call(db: AsyncSession, run_id: str, tool_call_id: str) -> ToolCall:
        call = (
            await db.execute(
                select(ToolCall)
                .where(ToolCall.run_id == run_id, ToolCall.tool_call_id == tool_call_id)
                .with_for_update()
            )
        ).scalar_one_or_none()
        if call is None:
            raise NotFoundError(f"run {run_id!r} has no tool call {tool_call_id!r}")
        return call

    async def _insert_llm_call(
        self,
        db: AsyncSession,
        run_id: str,
        turn: int,
        attempt: int,
        model: str,
        status: str,
        values: dict[str, Any],
    ) -> tuple[LlmCall, bool]:
        """One llm_calls row per (run, turn, attempt); a new row counts on the run."""
        row, inserted = await self._insert_once(
            db,
            LlmCall,
            {
                "idempotency_key": idempotency_key(run_id, turn, attempt),
                "run_id": run_id,
                "turn": turn,
                "attempt": attempt,
                "model": model,
                "status": status,
                **values,
            },
            LlmCall.idempotency_key,
        )
        if inserted:
            await db.execute(
                update(Run).where(Run.id == run_id).values(llm_call_count=Run.llm_call_count + 1)
            )
        elif status == "ok" and row.status == "lost":
            # The attempt was given up as lost (a later attempt started), yet it finished: its
            # success is the turn's record. The row already counts on the run.
            row.status = "ok"
            row.error = None
            for name, value in values.items():
                setattr(row, name, value)
            await db.flush()
        return row, inserted

    async def _claim_session(self, db: AsyncSession, session_id: str, run_id: str) -> None:
        session = (
            await db.execute(select(Session).where(Session.id == session_id).with_for_update())
        ).scalar_one()
        holder = session.active_run_id
        if holder and holder != run_id:
            status = (await db.execute(select(Run.status).where(Run.id == holder))).scalar()
            if status is not None and not RunStatus(status).terminal:
                raise SessionBusyError(session_id, holder)
        session.active_run_id = run_id

    async def get_run(self, run_id: str) -> Run:
        async with self.session() as db:
            run = await db.get(Run, run_id)
            if run is None:
                raise NotFoundError(f"no run with id {run_id!r}")
            return run

    async def find_run(self, run_id: str) -> Run | None:
        async with self.session() as db:
            return await db.get(Run, run_id)

    async def set_run_status(
        self,
        run_id: str,
        status: RunStatus,
        *,
        error: str | None = None,
        final_text: str | None = None,
        event_data: dict[str, Any] | None = None,
    ) -> tuple[Run, bool]:
        """Move the run forward to `status`; returns (run, changed).

        A terminal status is never overwritten and a status never moves back (QUEUED after
        RUNNING); such a late write changes nothing. A change appends a run.status event in
        the same transaction.
        """
        async with self.session() as db, db.begin():
            run = await self._lock_run(db, run_id)
            current = RunStatus(run.status)
            if current == status or current.terminal or status.rank < current.rank:
                return run, False
            run.status = status.value
            run.updated_at = _utcnow()
            if error is not None:
                run.error = error
            if final_text is not None:
                run.final_text = final_text
            if status.terminal:
                run.finished_at = _utcnow()
                await db.execute(
                    update(Session)
                    .where(Session.id == run.session_id, Session.active_run_id == run_id)
                    .values(active_run_id=None)
                )
            data = {"status": status.value, "previous": current.value, **(event_data or {})}
            if error is not None:
                data["error"] = error
            await self._append_locked(db, run, [EventIn.of(RunStatusData(**data))])
            return run, True

    # ---------------------------------------------------------------------------------------
    # events

    async def append_events(self, run_id: str, events: Sequence[EventIn]) -> list[RunEvent]:
        """Append events with gapless seqs; an event whose key is already there is returned
        as it was recorded and not appended again."""
        async with self.session() as db, db.begin():
            run = await self._lock_run(db, run_id)
            return await self._append_locked(db, run, events)

    async def append_stream_event(self, run_id: str, payload: EventData) -> int:
        """Append one event without an idempotency key in a single statement; returns its seq.

        The hot path of streaming (message.delta): the UPDATE takes the run row's lock and
        allocates the seq, the INSERT and the NOTIFY ride in the same statement, so a delta
        costs one round trip instead of five, with the same gapless, commit-ordered seqs.
        """
        event = EventIn.of(payload)
        async with self.engine.begin() as conn:
            seq = (
                await conn.execute(
                    _STREAM_APPEND,
                    {
                        "run_id": run_id,
                        "type": event.type,
                        "data": json.dumps(event.data, ensure_ascii=False),
                        "channel": NOTIFY_CHANNEL,
                    },
                )
            ).scalar_one_or_none()
        if seq is None:
            raise NotFoundError(f"no run with id {run_id!r}")
        return int(seq)

    async def append_event(
        self, run_id: str, payload: EventData, key: str | None = None
    ) -> RunEvent:
        return (await self.append_events(run_id, [EventIn.of(payload, key)]))[0]

    async def _append_locked(
        self, db: AsyncSession, run: Run, events: Sequence[EventIn]
    ) -> list[RunEvent]:
        # The caller holds the run row's lock (SELECT ... FOR UPDATE), so seqs are allocated in
        # commit order and a rolled-back transaction gives its seqs back: no gaps, no reordering.
        keys = [e.key for e in events if e.key is not None]
        existing: dict[str, RunEvent] = {}
        if keys:
            rows = await db.execute(
                select(RunEvent).where(
                    RunEvent.run_id == run.id, RunEvent.idempotency_key.in_(keys)
                )
            )
            existing = {r.idempotency_key: r for r in rows.scalars() if r.idempotency_key}
        out: list[RunEvent] = []
        new_rows: list[dict[str, Any]] = []
        seq = run.last_event_seq
        seen: dict[str, int] = {}
        for e in events:
            if e.key is not None and e.key in existing:
                out.append(existing[e.key])
                continue
            if e.key is not None and e.key in seen:
                continue
            seq += 1
            if e.key is not None:
                seen[e.key] = seq
            new_rows.append(
                {
                    "run_id": run.id,
                    "seq": seq,
                    "type": e.type,
                    "data": e.data,
                    "idempotency_key": e.key,
                }
            )
        if new_rows:
            inserted = (
                (await db.execute(insert(RunEvent).returning(RunEvent), new_rows)).scalars().all()
            )
            out.extend(inserted)
            run.last_event_seq = seq
            await db.flush()
            # Delivered at commit, so a woken follower always finds the rows.
            await db.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": NOTIFY_CHANNEL, "payload": f"{run.id}:{seq}"},
            )
        out.sort(key=lambda r: r.seq)
        return out

    async def read_events(
        self, run_id: str, after_seq: int = 0, limit: int = 1000
    ) -> list[RunEvent]:
        async with self.session() as db:
            rows = await db.execute(
                select(RunEvent)
                .where(RunEvent.run_id == run_id, RunEvent.seq > after_seq)
                .order_by(RunEvent.seq)
                .limit(limit)
            )
            return list(rows.scalars())

    async def follow_events(
        self,
        run_id: str,
        after_seq: int = 0,
        *,
        poll_interval: float = 1.0,
        until_terminal: bool = True,
    ) -> AsyncIterator[RunEvent]:
        """Yield every event after `after_seq` in seq order, then new ones as they commit.

        NOTIFY wakes the follower at once; polling every `poll_interval` is the fallback for
        a lost notification or a dropped listener connection. Ends after the run reaches a
        terminal status and its last event has been yielded.
        """
        cursor = after_seq
        listener: psycopg.AsyncConnection[Any] | None = None
        try:
            try:
                listener = await psycopg.AsyncConnection.connect(self.libpq_url, autocommit=True)
                await listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
            except psycopg.OperationalError:
                listener = None
            while True:
                batch = await self.read_events(run_id, cursor)
                for event in batch:
                    cursor = event.seq
                    yield event
                if batch:
                    continue
                if until_terminal:
                    run = await self.find_run(run_id)
                    if run is None:
                        raise NotFoundError(f"no run with id {run_id!r}")
                    if RunStatus(run.status).terminal and run.last_event_seq <= cursor:
                        return
                await self._wait_notify(listener, run_id, poll_interval)
        finally:
            if listener is not None:
                await listener.close()

    @staticmethod
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

    # ---------------------------------------------------------------------------------------
    # messages, tool calls, model calls

    async def record_message(
        self,
        *,
        key: str,
        session_id: str,
        run_id: str,
        turn: int,
        role: str,
        content: str | None,
        tool_calls: list[dict[str, Any]] | None = None,
        tool_call_id: str | None = None,
        name: str | None = None,
        token_estimate: int = 0,
    ) -> Message:
        async with self.session() as db, db.begin():
            row, _ = await self._insert_once(
                db,
                Message,
                {
                    "idempotency_key": key,
                    "session_id": session_id,
                    "run_id": run_id,
                    "turn": turn,
                    "role": role,
                    "content": content,
                    "tool_calls": tool_calls,
                    "tool_call_id": tool_call_id,
                    "name": name,
                    "token_estimate": token_estimate,
                },
                Message.idempotency_key,
            )
            return row

    async def session_messages(self, session_id: str) -> list[Message]:
        async with self.session() as db:
            rows = await db.execute(
                select(Message).where(Message.session_id == session_id).order_by(Message.id)
            )
            return list(rows.scalars())

    async def session_messages_before(
        self, session_id: str, before_id: int | None, limit: int
    ) -> list[Message]:
        """Up to `limit` messages of the session older than message `before_id` (all when
        None), newest first: a context is read backwards only as far as its budget needs."""
        async with self.session() as db:
            stmt = select(Message).where(Message.session_id == session_id)
            if before_id is not None:
                stmt = stmt.where(Message.id < before_id)
            rows = await db.execute(stmt.order_by(Message.id.desc()).limit(limit))
            return list(rows.scalars())

    async def run_messages(self, run_id: str) -> list[Message]:
        async with self.session() as db:
            rows = await db.execute(
                select(Message).where(Message.run_id == run_id).order_by(Message.id)
            )
            return list(rows.scalars())

    async def record_tool_call(
        self,
        *,
        run_id: str,
        turn: int,
        tool_call_id: str,
        name: str,
        arguments: str,
        status: ToolCallStatus = ToolCallStatus.PENDING,
    ) -> ToolCall:
        async with self.session() as db, db.begin():
            row, inserted = await self._insert_once(
                db,
                ToolCall,
                {
                    "idempotency_key": idempotency_key(run_id, tool_call_id),
                    "run_id": run_id,
                    "turn": turn,
                    "tool_call_id": tool_call_id,
                    "name": name,
                    "arguments": arguments,
                    "arguments_sha256": sha256_text(arguments),
                    "status": status.value,
                },
                ToolCall.idempotency_key,
            )
            if inserted:
                await db.execute(
                    update(Run)
                    .where(Run.id == run_id)
                    .values(tool_call_count=Run.tool_call_count + 1)
                )
            return row

    async def get_tool_call(self, run_id: str, tool_call_id: str) -> ToolCall:
        async with self.session() as db:
            row = (
                await db.execute(
                    select(ToolCall).where(
                        ToolCall.run_id == run_id, ToolCall.tool_call_id == tool_call_id
                    )
                )
            ).scalar_one_or_none()
            if row is None:
                raise NotFoundError(f"run {run_id!r} has no tool call {tool_call_id!r}")
            return row

    async def run_tool_calls(self, run_id: str) -> list[ToolCall]:
        async with self.session() as db:
            rows = await db.execute(
                select(ToolCall).where(ToolCall.run_id == run_id).order_by(ToolCall.id)
            )
            return list(rows.scalars())

    async def start_tool_attempt(self, run_id: str, tool_call_id: str) -> ToolCall:
        """Count an execution attempt; returns the row (check .status for a recorded result)."""
        row, _ = await self.claim_tool_attempt(run_id, tool_call_id)
        return row

    async def claim_tool_attempt(
        self, run_id: str, tool_call_id: str, *, max_attempts: int | None = None
    ) -> tuple[ToolCall, bool]:
        """Count an execution attempt unless the call has a result or has already been started
        `max_attempts` times; returns (row, started). The count lives in the row, so it holds
        across worker deaths that Temporal's own attempt counter sees as timeouts."""
        async with self.session() as db, db.begin():
            row = await self._lock_tool_call(db, run_id, tool_call_id)
            if ToolCallStatus(row.status).terminal:
                return row, False
            if max_attempts is not None and row.attempts >= max_attempts:
                return row, False
            row.status = ToolCallStatus.RUNNING.value
            row.attempts += 1
            row.started_at = row.started_at or _utcnow()
            return row, True

    async def record_tool_result(
        self,
        *,
        session_id: str,
        run_id: str,
        tool_call_id: str,
        result: str,
        is_error: bool,
        event_data: dict[str, Any] | None = None,
    ) -> tuple[ToolCall, Message]:
        """Record a tool's result on its row, as a tool message, and as a tool.result event,
        all in one transaction; a repeat returns what was recorded first."""
        async with self.session() as db, db.begin():
            run = await self._lock_run(db, run_id)
            call = await self._lock_tool_call(db, run_id, tool_call_id)
            message, inserted = await self._insert_once(
                db,
                Message,
                {
                    "idempotency_key": idempotency_key(run_id, "tool", tool_call_id),
                    "session_id": session_id,
                    "run_id": run_id,
                    "turn": call.turn,
                    "role": "tool",
                    "content": result,
                    "tool_call_id": tool_call_id,
                    "name": call.name,
                    "token_estimate": estimate_tokens(result),
                },
                Message.idempotency_key,
            )
            if not inserted:
                return call, message
            call.status = (ToolCallStatus.ERROR if is_error else ToolCallStatus.SUCCEEDED).value
            call.result = result
            call.is_error = is_error
            call.finished_at = _utcnow()
            await self._append_locked(
                db,
                run,
                [
                    EventIn.of(
                        ToolResultData(
                            tool_call_id=tool_call_id,
                            name=call.name,
                            is_error=is_error,
                            result=result,
                            **(event_data or {}),
                        ),
                        key=event_key(EventType.TOOL_RESULT, tool_call_id),
                    )
                ],
            )
            return call, message

    async def record_llm_call(
        self,
        *,
        run_id: str,
        turn: int,
        attempt: int,
        model: str,
        status: str,
        **values: Any,
    ) -> LlmCall:
        async with self.session() as db, db.begin():
            row, _ = await self._insert_llm_call(db, run_id, turn, attempt, model, status, values)
            return row

    async def run_llm_calls(self, run_id: str) -> list[LlmCall]:
        async with self.session() as db:
            rows = await db.execute(
                select(LlmCall).where(LlmCall.run_id == run_id).order_by(LlmCall.id)
            )
            return list(rows.scalars())

    async def count(self, model: type[Any], **where: Any) -> int:
        async with self.session() as db:
            stmt = select(func.count()).select_from(model)
            for name, value in where.items():
                stmt = stmt.where(getattr(model, name) == value)
            return int((await db.execute(stmt)).scalar_one())

    # ---------------------------------------------------------------------------------------
    # agent-loop records

    async def open_run(
        self,
        *,
        run_id: str,
        session_id: str,
        model: str,
        config: dict[str, Any],
        prompt: str,
        workflow_run_id: str | None = None,
    ) -> Run:
        """Create the run (claiming its session), its user message and the QUEUED event in one
        transaction. A repeat by the same workflow execution (a retried step) returns the run
        as it is and writes nothing.

        A run is driven by the one execution that opened it: a run that already ended raises
        RunEndedError, and one opened by another execution (`workflow_run_id` differs) raises
        RunOwnedError, both writing nothing. A run opened before executions were recorded is
        taken by the first execution that opens it again.
        """
        async with self.session() as db, db.begin():
            run, created = await self._create_run(
                db,
                run_id,
                session_id,
                model,
                config,
                claim_session=True,
                workflow_run_id=workflow_run_id,
            )
            if not created:
                run = await self._lock_run(db, run_id)
                if RunStatus(run.status).terminal:
                    raise RunEndedError(run_id, run.status)
                if workflow_run_id is not None:
                    if run.workflow_run_id is None:
                        run.workflow_run_id = workflow_run_id
                    elif run.workflow_run_id != workflow_run_id:
                        raise RunOwnedError(run_id, run.workflow_run_id)
                return run
            await self._insert_once(
                db,
                Message,
                {
                    "idempotency_key": idempotency_key(run_id, 0, "user"),
                    "session_id": session_id,
                    "run_id": run_id,
                    "turn": 0,
                    "role": "user",
                    "content": prompt,
                    "token_estimate": estimate_tokens(prompt),
                },
                Message.idempotency_key,
            )
            await self._append_locked(
                db,
                run,
                [
                    EventIn.of(
                        RunStatusData(
                            status=RunStatus.QUEUED,
                            session_id=session_id,
                            model=model,
                            prompt=prompt[:2000],
                        ),
                        key="status:QUEUED",
                    )
                ],
            )
            return run

    async def find_turn(self, run_id: str, turn: int) -> tuple[Message, LlmCall | None] | None:
        """The recorded assistant message of a turn and its successful model call, if any."""
        async with self.session() as db:
            message = (
                await db.execute(
                    select(Message).where(
                        Message.idempotency_key == idempotency_key(run_id, turn, "assistant")
                    )
                )
            ).scalar_one_or_none()
            if message is None:
                return None
            return message, await self._ok_call(db, run_id, turn)

    @staticmethod
    async def _ok_call(db: AsyncSession, run_id: str, turn: int) -> LlmCall | None:
        """The successful model call of a recorded turn (the first, should there be two)."""
        return (
            (
                await db.execute(
                    select(LlmCall)
                    .where(LlmCall.run_id == run_id, LlmCall.turn == turn, LlmCall.status == "ok")
                    .order_by(LlmCall.attempt)
                    .limit(1)
                )
            )
            .scalars()
            .first()
        )

    async def model_attempts(self, run_id: str, turn: int) -> list[LlmCall]:
        """The attempts of a turn that reached the model or were lost on the way (ok, error,
        lost): what the turn's model budget counts. Attempts that never got past the database
        are not among them."""
        async with self.session() as db:
            rows = await db.execute(
                select(LlmCall)
                .where(
                    LlmCall.run_id == run_id,
                    LlmCall.turn == turn,
                    LlmCall.status.in_(MODEL_ATTEMPT_STATUSES),
                )
                .order_by(LlmCall.attempt)
            )
            return list(rows.scalars())

    async def mark_lost_attempts(
        self,
        run_id: str,
        turn: int,
        attempt: int,
        model: str,
        *,
        not_lost: Sequence[int] = (),
    ) -> int:
        """Give every earlier attempt of a turn that left no llm_calls row (its worker died, or
        it stalled past its heartbeat timeout) a row that says so. Returns how many."""
        async with self.session() as db, db.begin():
            have = set(
                (
                    await db.execute(
                        select(LlmCall.attempt).where(
                            LlmCall.run_id == run_id, LlmCall.turn == turn
                        )
                    )
                ).scalars()
            )
            missing = [a for a in range(1, attempt) if a not in have]
            for a in missing:
                if a in not_lost:
                    # Known to have failed on the database before it reached the model.
                    await self._insert_llm_call(
                        db,
                        run_id,
                        turn,
                        a,
                        model,
                        "db_error",
                        {"error": "the database was unavailable; the model was not called"},
                    )
                    continue
                await self._insert_llm_call(
                    db,
                    run_id,
                    turn,
                    a,
                    model,
                    "lost",
                    {
                        "error": "the attempt ended without a record: its worker was lost or "
                        "it timed out (heartbeat or start-to-close)"
                    },
                )
            return len([a for a in missing if a not in not_lost])

    async def record_model_turn(
        self,
        *,
        run_id: str,
        session_id: str,
        turn: int,
        attempt: int,
        model: str,
        text: str,
        tool_calls: list[dict[str, Any]],
        call_values: dict[str, Any],
    ) -> tuple[Message, LlmCall, bool]:
        """Record a finished model turn in one transaction: the assistant message, the
        llm_calls row, a tool_calls row per call, the run's totals and the message.completed,
        tool.call and llm.usage events. Returns (message, llm_call, inserted); when the turn
        was already recorded, nothing is written and the first record is returned.

        A tool-call id that is empty or already used earlier in the run is replaced by one
        made from the turn and index, in the message and the tool_calls row alike.
        """
        async with self.session() as db, db.begin():
            run = await self._lock_run(db, run_id)
            key = idempotency_key(run_id, turn, "assistant")
            existing = (
                await db.execute(select(Message).where(Message.idempotency_key == key))
            ).scalar_one_or_none()
            if existing is not None:
                call = await self._ok_call(db, run_id, turn)
                if call is None:
                    # The turn was recorded by an attempt whose row is missing or not ok (a
                    # record from before lost rows were upgraded): this attempt's success
                    # is as good a record of it.
                    call, _ = await self._insert_llm_call(
                        db, run_id, turn, attempt, model, "ok", call_values
                    )
                return existing, call, False
            used = set(
                (
                    await db.execute(select(ToolCall.tool_call_id).where(ToolCall.run_id == run_id))
                ).scalars()
            )
            calls = [
                {**c, "id": call_id}
                for c, call_id in zip(
                    tool_calls,
                    unique_call_ids(turn, [c.get("id") or "" for c in tool_calls], used),
                    strict=True,
                )
            ]
            prompt_tokens = int(call_values.get("prompt_tokens") or 0)
            completion_tokens = int(call_values.get("completion_tokens") or 0)
            message, _ = await self._insert_once(
                db,
                Message,
                {
                    "idempotency_key": key,
                    "session_id": session_id,
                    "run_id": run_id,
                    "turn": turn,
                    "role": "assistant",
                    "content": text,
                    "tool_calls": calls or None,
                    "token_estimate": completion_tokens or estimate_tokens(text),
                },
                Message.idempotency_key,
            )
            llm_call, _ = await self._insert_llm_call(
                db, run_id, turn, attempt, model, "ok", call_values
            )
            for c in calls:
                arguments = c["function"]["arguments"]
                await self._insert_once(
                    db,
                    ToolCall,
                    {
                        "idempotency_key": idempotency_key(run_id, c["id"]),
                        "run_id": run_id,
                        "turn": turn,
                        "tool_call_id": c["id"],
                        "name": c["function"]["name"],
                        "arguments": arguments,
                        "arguments_sha256": sha256_text(arguments),
                        "status": ToolCallStatus.PENDING.value,
                    },
                    ToolCall.idempotency_key,
                )
            run.prompt_tokens += prompt_tokens
            run.completion_tokens += completion_tokens
            run.tool_call_count += len(calls)
            run.turns = max(run.turns, turn)
            run.updated_at = _utcnow()
            events = [
                EventIn.of(
                    MessageCompletedData(
                        turn=turn,
                        attempt=attempt,
                        role="assistant",
                        text=text,
                        tool_calls=calls,
                    ),
                    key=event_key(EventType.MESSAGE_COMPLETED, turn),
                ),
                *(
                    EventIn.of(
                        ToolCallData(
                            turn=turn,
                            tool_call_id=c["id"],
                            name=c["function"]["name"],
                            arguments=c["function"]["arguments"],
                        ),
                        key=event_key(EventType.TOOL_CALL, c["id"]),
                    )
                    for c in calls
                ),
                EventIn.of(
                    LlmUsageData(
                        turn=turn,
                        attempt=attempt,
                        model=model,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens,
                        latency_ms=call_values.get("latency_ms"),
                        time_to_first_token_ms=call_values.get("time_to_first_token_ms"),
                    ),
                    key=event_key(EventType.LLM_USAGE, turn),
                ),
            ]
            await self._append_locked(db, run, events)
            return message, llm_call, True

    async def request_waits(self, run_id: str, calls: list[dict[str, Any]]) -> tuple[Run, bool]:
        """Mark calls as waiting for a person (approval) or a caller (client-side result):
        the tool_calls rows, a tool.approval_requested / tool.result_requested event each,
        and WAITING_APPROVAL when an approval is among them. Returns (run, status_changed)."""
        async with self.session() as db, db.begin():
            run = await self._lock_run(db, run_id)
            events = []
            for c in calls:
                row = await self._lock_tool_call(db, run_id, c["tool_call_id"])
                if c["kind"] == "approval" and row.status == ToolCallStatus.PENDING.value:
                    row.status = ToolCallStatus.PENDING_APPROVAL.value
                requested = (ToolWaitData if c["kind"] == "approval" else ToolResultRequestedData)(
                    tool_call_id=c["tool_call_id"],
                    name=c["name"],
                    arguments=c["arguments"],
                    arguments_sha256=c["arguments_sha256"],
                    turn=c["turn"],
                )
                events.append(
                    EventIn.of(requested, key=event_key(requested.TYPE, c["tool_call_id"]))
                )
            await self._append_locked(db, run, events)
            changed = False
            current = RunStatus(run.status)
            if any(c["kind"] == "approval" for c in calls) and current == RunStatus.RUNNING:
                run.status = RunStatus.WAITING_APPROVAL.value
                run.updated_at = _utcnow()
                changed = True
                await self._append_locked(
                    db,
                    run,
                    [EventIn.of(RunStatusData(status=run.status, previous=current.value))],
                )
            return run, changed

    async def record_decision(
        self,
        run_id: str,
        *,
        tool_call_id: str,
        decision: str,
        decided_by: str,
        reason: str | None,
        arguments: str,
    ) -> ToolCall:
        """Record who decided what on a call, once: a repeat returns the first decision."""
        async with self.session() as db, db.begin():
            run = await self._lock_run(db, run_id)
            row = await self._lock_tool_call(db, run_id, tool_call_id)
            if row.decision is not None:
                return row
            row.decision = decision
            row.decided_by = decided_by
            row.decision_reason = reason
            row.decided_at = _utcnow()
            if arguments != row.arguments:
                row.decided_arguments = arguments
            if not ToolCallStatus(row.status).terminal:
                row.status = (
                    ToolCallStatus.REJECTED if decision == "reject" else ToolCallStatus.APPROVED
                ).value
            await self._append_locked(
                db,
                run,
                [
                    EventIn.of(
                        ToolDecidedData(
                            tool_call_id=tool_call_id,
                            name=row.name,
                            decision=decision,
                            decided_by=decided_by,
                            reason=reason,
                            arguments=arguments,
                            edited=arguments != row.arguments,
                        ),
                        key=event_key(EventType.TOOL_DECIDED, tool_call_id),
                    )
                ],
            )
            return row

    async def final_assistant_text(self, run_id: str) -> str:
        async with self.session() as db:
            text_ = (
                await db.execute(
                    select(Message.content)
                    .where(Message.run_id == run_id, Message.role == "assistant")
                    .order_by(Message.turn.desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
            return text_ or ""


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


def unique_call_ids(turn: int, ids: list[str], used: set[str]) -> list[str]:
    """The model's tool-call ids, with an empty id or one already used in the run (earlier, or
    in this same reply) replaced by `call_t{turn}_{index}`, suffixed until it is unused: unique
    by construction, so no call loses its row to another's."""
    taken = set(used)
    out = []
    for index, call_id in enumerate(ids):
        if not call_id or call_id in taken:
            base = f"call_t{turn}_{index}"
            call_id, n = base, 1
            while call_id in taken:
                n += 1
                call_id = f"{base}_{n}"
        taken.add(call_id)
        out.append(call_id)
    return out


def estimate_tokens(text_: str | None) -> int:
    """A cheap token estimate (about four characters a token) for context budgeting."""
    return 0 if not text_ else max(1, len(text_) // 4)
