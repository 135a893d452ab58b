"""Forgetting a session: erase every text of its conversation, keep its usage figures, leave a
tombstone.

In one transaction, under the session row's lock (a run cannot open in it meanwhile):
- messages: deleted (summaries too);
- tool_calls: arguments, edited arguments, their hash, result, decision reason and who
  decided are erased; name, status, attempts and timings stay;
- runs: config, error and final text erased; status, model, token and call counts stay;
- llm_calls: the error text erased; model, tokens, timings (and cost columns) stay;
- run_events: deleted but for run.status (without prompt and error) and llm.usage, and a
  `session.deleted` event is appended to each run's log: the tombstone;
- webhook_deliveries: payload and last error erased; a pending one is failed (never sent);
- api_idempotency: the rows of its runs deleted (they hold a hash of the request body);
- sessions: metadata erased, deleted_at set: the row stays and refuses new runs.

A session with a run that has not ended is refused (SessionActiveError): its workflow would
write again. Deleting a deleted session again erases again (a no-op) and keeps the first
deleted_at.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from agentrun.db.models import (
    ApiIdempotency,
    LlmCall,
    Message,
    Run,
    RunEvent,
    Session,
    ToolCall,
    WebhookDelivery,
)
from agentrun.protocol.events import EventType, SessionDeletedData
from agentrun.protocol.statuses import RunStatus, WebhookDeliveryStatus
from agentrun.store import queue
from agentrun.store.engine import utcnow
from agentrun.store.events import EventIn, append_locked, lock_run
from agentrun.store.runs import SessionNotFoundError

__all__ = [
    "ERASED_STATUS_FIELDS",
    "ErasedSession",
    "SessionActiveError",
    "SessionDeletedError",
    "erase_session",
    "idle_sessions",
]

# The run.status fields that may hold conversation text (the prompt, a failure's message).
ERASED_STATUS_FIELDS = ("prompt", "error")
TOMBSTONE_KEY = "tombstone"  # the one session.deleted event of a run (stored: never change)
DELIVERY_ERASED = "not sent: the session was deleted"


class SessionActiveError(RuntimeError):
    """The session has a run that has not ended; cancel it first (or ask for that)."""

    def __init__(self, session_id: str, run_ids: list[str]) -> None:
        super().__init__(
            f"session {session_id!r} has a run that has not ended ({', '.join(run_ids)}); "
            "cancel it first, or delete with --cancel-active (HTTP: ?cancel_active=true)"
        )
        self.session_id = session_id
        self.run_ids = run_ids


class SessionDeletedError(SessionNotFoundError):
    """A run was started in a session that was deleted."""

    def __init__(self, session_id: str) -> None:
        Exception.__init__(
            self,
            f"session {session_id!r} was deleted; start the run in a new session (a new id)",
        )
        self.session_id = session_id


@dataclass(frozen=True)
class ErasedSession:
    session_id: str
    run_ids: list[str]
    deleted_at: datetime
    messages: int


async def live_runs(db: AsyncSession, session_id: str) -> list[str]:
    terminal = [s.value for s in RunStatus if s.terminal]
    rows = await db.execute(
        select(Run.id).where(Run.session_id == session_id, Run.status.not_in(terminal))
    )
    return list(rows.scalars())


async def erase_session(
    db: AsyncSession, session_id: str, tenant: str, *, by: str | None = None
) -> ErasedSession:
    """Erase the session's text (see the module). SessionNotFoundError for a missing session
    or another tenant's, SessionActiveError while a run of it has not ended; either writes
    nothing."""
    session = (
        await db.execute(select(Session).where(Session.id == session_id).with_for_update())
    ).scalar_one_or_none()
    if session is None or session.tenant != tenant:
        raise SessionNotFoundError(session_id)
    live = await live_runs(db, session_id)
    if live:
        raise SessionActiveError(session_id, live)
    deleted_at = session.deleted_at or utcnow()
    run_ids = list(
        (
            await db.execute(
                select(Run.id).where(Run.session_id == session_id).order_by(Run.created_at)
            )
        ).scalars()
    )
    gone = await db.execute(delete(Message).where(Message.session_id == session_id))
    await queue.erase(db, session_id)  # queued messages (double-texting)
    await _erase_runs(db, run_ids)
    deliveries = update(WebhookDelivery).where(WebhookDelivery.session_id == session_id)
    pending = WebhookDelivery.status == WebhookDeliveryStatus.PENDING.value
    await db.execute(deliveries.where(~pending).values(payload=literal({}, JSONB), last_error=None))
    await db.execute(
        deliveries.where(pending).values(
            payload=literal({}, JSONB),
            last_error=DELIVERY_ERASED,
            status=WebhookDeliveryStatus.FAILED.value,
        )
    )
    session.metadata_ = {}
    session.deleted_at = deleted_at
    session.active_run_id = None
    for run_id in run_ids:
        run = await lock_run(db, run_id)
        tomb = SessionDeletedData(session_id=session_id, deleted_at=deleted_at, by=by)
        await append_locked(db, run, [EventIn.of(tomb, key=TOMBSTONE_KEY)])
    return ErasedSession(session_id, run_ids, deleted_at, gone.rowcount or 0)  # type: ignore[attr-defined]


async def erase_session_tree(
    db: AsyncSession, session_id: str, tenant: str, *, by: str | None = None
) -> ErasedSession:
    """erase_session, and the same for the sessions of its runs' sub-runs (a sub-agent's run
    has a session of its own, holding the task its parent gave it), all in one transaction.
    The answer names every run erased; `messages` counts all of them."""
    erased = await erase_session(db, session_id, tenant, by=by)
    run_ids, messages, parents = list(erased.run_ids), erased.messages, erased.run_ids
    while parents:
        children = (
            await db.execute(
                select(Run.session_id)
                .where(Run.parent_run_id.in_(parents), Run.tenant == tenant)
                .distinct()
            )
        ).scalars()
        parents = []
        for child_session in sorted(set(children) - {session_id}):
            child = await erase_session(db, child_session, tenant, by=by)
            run_ids += child.run_ids
            messages += child.messages
            parents += child.run_ids
    return ErasedSession(session_id, run_ids, erased.deleted_at, messages)


async def _erase_runs(db: AsyncSession, run_ids: list[str]) -> None:
    if not run_ids:
        return
    await db.execute(
        update(ToolCall)
        .where(ToolCall.run_id.in_(run_ids))
        .values(
            arguments="",
            arguments_sha256="",
            decided_arguments=None,
            result=None,
            decision_reason=None,
            decided_by=None,
        )
    )
    await db.execute(
        update(Run)
        .where(Run.id.in_(run_ids))
        .values(config=literal({}, JSONB), error=None, final_text=None)
    )
    await db.execute(update(LlmCall).where(LlmCall.run_id.in_(run_ids)).values(error=None))
    kept = [EventType.RUN_STATUS.value, EventType.LLM_USAGE.value, EventType.SESSION_DELETED.value]
    await db.execute(
        delete(RunEvent).where(RunEvent.run_id.in_(run_ids), RunEvent.type.not_in(kept))
    )
    stripped: Any = RunEvent.data
    for name in ERASED_STATUS_FIELDS:
        stripped = stripped.op("-")(literal(name))
    await db.execute(
        update(RunEvent)
        .where(RunEvent.run_id.in_(run_ids), RunEvent.type == EventType.RUN_STATUS.value)
        .values(data=stripped)
    )
    await db.execute(delete(ApiIdempotency).where(ApiIdempotency.run_id.in_(run_ids)))


async def idle_sessions(db: AsyncSession, idle_since: datetime, limit: int) -> list[Session]:
    """Sessions not deleted yet whose last run was created (or, with no run, which were made)
    before `idle_since` and that have no run that has not ended: retention's candidates,
    oldest first."""
    terminal = [s.value for s in RunStatus if s.terminal]
    last_run = (
        select(func.max(func.greatest(Run.created_at, Run.updated_at)))
        .where(Run.session_id == Session.id)
        .correlate(Session)
        .scalar_subquery()
    )
    busy = (
        select(Run.id)
        .where(Run.session_id == Session.id, Run.status.not_in(terminal))
        .correlate(Session)
        .exists()
    )
    rows = await db.execute(
        select(Session)
        .where(
            Session.deleted_at.is_(None),
            func.coalesce(last_run, Session.created_at) < idle_since,
            ~busy,
        )
        .order_by(Session.created_at)
        .limit(limit)
    )
    return list(rows.scalars())
