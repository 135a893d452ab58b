"""A session's queue of messages (double-texting): every decision about who runs next is made
here, in a transaction that holds the session row's lock, the same lock `open_run` takes to
claim the session. That is the one place where races are settled:

- `submit` takes a message with a policy (IfBusy): refused, or recorded as a queued row with
  its position, in the transaction that saw whether the session was busy;
- `refuse_if_queued` (called by open_run) refuses a run started the old way (no policy) while
  messages wait, so the queue's order holds against every client;
- `next_step` picks what the session's queue workflow does next: start the first message's run
  (marking it started, and rolling back the run it replaces), stop the active run for a
  preempting message, wait, or nothing.

A run started from the queue is an ordinary run (its id fixed when the message was accepted);
the session holds one active run at a time by open_run's rule, as before.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agentrun.contracts import AgentConfig
from agentrun.contracts.queue import Accepted
from agentrun.db.models import DEFAULT_TENANT, Message, QueuedMessage, Run, Session
from agentrun.protocol.events import MessageInterruptedData, RunRolledBackData
from agentrun.protocol.queue import IfBusy, MessageState, QueuedState
from agentrun.store.engine import NotFoundError, idempotency_key, insert_once, utcnow
from agentrun.store.events import EventIn, append, append_locked, lock_run
from agentrun.store.keys import check_name
from agentrun.store.runs import SessionBusyError, SessionNotFoundError, session_holder
from agentrun.store.turns import estimate_tokens

PREEMPTING = (IfBusy.INTERRUPT, IfBusy.ROLLBACK)
# Messages a session keeps waiting at most: anyone who may send to it could otherwise grow
# its queue (and every step's read of it) without end.
MAX_WAITING = 100
# The order in which waiting messages start: preempting ones first, then arrival.
START_ORDER = (QueuedMessage.preempt.desc(), QueuedMessage.position)


class QueueError(ValueError):
    """A queued message cannot be changed so (already started, another tenant's, ...)."""


def new_message_id() -> str:
    return f"msg-{uuid.uuid4().hex[:12]}"


def _not_opened() -> Any:
    """A started message whose run has no row yet: a worker has not opened it."""
    return ~exists().where(Run.id == QueuedMessage.run_id)


async def _locked_session(
    db: AsyncSession, session_id: str, tenant: str, *, create: bool
) -> Session:
    """The session row, locked until the transaction ends (made first when `create`)."""
    check_name("tenant", tenant)
    if create:
        await insert_once(
            db, Session, {"id": session_id, "metadata_": {}, "tenant": tenant}, Session.id
        )
    row = (
        await db.execute(select(Session).where(Session.id == session_id).with_for_update())
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"no session {session_id!r}")
    if row.tenant != tenant:
        raise SessionNotFoundError(session_id)
    if row.deleted_at is not None:
        from agentrun.store.forget import SessionDeletedError  # imports the store's modules

        raise SessionDeletedError(session_id)
    return row


async def _waiting(db: AsyncSession, session_id: str) -> list[QueuedMessage]:
    rows = await db.execute(
        select(QueuedMessage)
        .where(QueuedMessage.session_id == session_id, QueuedMessage.state == QueuedState.QUEUED)
        .order_by(*START_ORDER)
    )
    return list(rows.scalars())


async def _pending_open(db: AsyncSession, session_id: str) -> list[QueuedMessage]:
    rows = await db.execute(
        select(QueuedMessage)
        .where(
            QueuedMessage.session_id == session_id,
            QueuedMessage.state == QueuedState.STARTED,
            _not_opened(),
        )
        .order_by(QueuedMessage.position)
    )
    return list(rows.scalars())


async def _active(db: AsyncSession, session_id: str) -> str | None:
    """The run that holds the session, or a run the queue started that no worker opened yet
    (it holds the session as soon as it opens). The caller holds the session's lock."""
    holder = await session_holder(db, session_id)
    if holder is not None:
        return holder
    pending = await _pending_open(db, session_id)
    return pending[0].run_id if pending else None


def _accepted(row: QueuedMessage, ahead: int, active: str | None) -> Accepted:
    return Accepted(
        message_id=row.id,
        run_id=row.run_id,
        session_id=row.session_id,
        policy=IfBusy(row.policy),
        state=QueuedState(row.state),
        position=row.position,
        ahead=ahead,
        active_run_id=active,
    )


async def submit(
    db: AsyncSession,
    *,
    session_id: str,
    run_id: str,
    prompt: str,
    config: AgentConfig,
    policy: IfBusy | None,
    tenant: str = DEFAULT_TENANT,
    message_id: str | None = None,
) -> Accepted:
    """Take a message for the session under its lock. `policy` None: the session's default
    (reject when it has none). A busy session (an active run, or messages waiting) refuses it
    with SessionBusyError under reject; otherwise it is recorded as queued with the next
    position, preempting (started before the others, once the active run is stopped) under
    interrupt and rollback. The same run id again returns the message already taken."""
    session = await _locked_session(db, session_id, tenant, create=True)
    again = (
        await db.execute(select(QueuedMessage).where(QueuedMessage.run_id == run_id))
    ).scalar_one_or_none()
    if again is not None:
        if again.session_id != session_id:
            raise QueueError(f"run id {run_id!r} is already used in another session")
        return _accepted(again, 0, None)
    if await db.get(Run, run_id) is not None:
        raise QueueError(f"run id {run_id!r} is already used; start a new run id")
    policy = IfBusy(policy or session.if_busy or IfBusy.REJECT)
    active = await _active(db, session_id)
    waiting = await _waiting(db, session_id)
    if policy == IfBusy.REJECT and (active is not None or waiting):
        raise SessionBusyError(session_id, active or waiting[0].run_id)
    if len(waiting) >= MAX_WAITING:
        raise QueueError(
            f"session {session_id!r} has {len(waiting)} messages waiting, the most it takes; "
            "wait for them or cancel some"
        )
    preempt = policy in PREEMPTING and active is not None
    last = (
        await db.execute(
            select(func.max(QueuedMessage.position)).where(QueuedMessage.session_id == session_id)
        )
    ).scalar()
    row, _ = await insert_once(
        db,
        QueuedMessage,
        {
            "id": message_id or new_message_id(),
            "session_id": session_id,
            "tenant": tenant,
            "position": (last or 0) + 1,
            "run_id": run_id,
            "prompt": prompt,
            "config": config.model_dump(mode="json", exclude_unset=True),
            "policy": policy.value,
            "preempt": preempt,
            "supersedes_run_id": active if preempt else None,
            "state": QueuedState.QUEUED.value,
        },
        QueuedMessage.run_id,
    )
    ahead = (1 if active else 0) + sum(1 for w in waiting if w.preempt or not preempt)
    return _accepted(row, ahead, active)


async def refuse_if_queued(db: AsyncSession, session_id: str, run_id: str) -> None:
    """open_run's queue rule (the caller holds the session's lock): a run that is not a
    started message of the queue is refused while messages wait or a queued run is about to
    open, so a run started without a policy never jumps the queue."""
    mine = (
        await db.execute(select(QueuedMessage.state).where(QueuedMessage.run_id == run_id))
    ).scalar_one_or_none()
    if mine == QueuedState.STARTED:
        return
    if mine is not None:
        raise QueueError(f"run {run_id!r} is a {mine} message of its session's queue")
    ahead = await _waiting(db, session_id) or await _pending_open(db, session_id)
    if ahead:
        raise SessionBusyError(session_id, ahead[0].run_id)


@dataclass
class Step:
    """What the session's queue does next (next_step)."""

    kind: str  # start | cancel | wait | idle
    message: QueuedMessage | None = None
    active_run_id: str | None = None


async def next_step(db: AsyncSession, session_id: str) -> Step:
    """Under the session's lock: nothing waits (idle); the first waiting message preempts
    and a run is active (cancel it); a run is active (wait); else mark the first message
    started, roll back the run it replaces when its policy says so, and start it."""
    session = (
        await db.execute(select(Session).where(Session.id == session_id).with_for_update())
    ).scalar_one_or_none()
    if session is None:
        return Step("idle")
    waiting = await _waiting(db, session_id)
    if not waiting:
        return Step("idle")
    head = waiting[0]
    active = await _active(db, session_id)
    if active is not None:
        if head.preempt and active == head.supersedes_run_id:
            return Step("cancel", head, active)
        return Step("wait", head, active)
    head.state = QueuedState.STARTED.value
    head.started_at = utcnow()
    if head.policy == IfBusy.ROLLBACK and head.supersedes_run_id:
        await _roll_back(db, head)
    return Step("start", head)


async def _roll_back(db: AsyncSession, by: QueuedMessage) -> None:
    run_id = by.supersedes_run_id
    assert run_id is not None
    marked = await db.execute(
        update(Message)
        .where(Message.run_id == run_id)
        .values(state=MessageState.ROLLED_BACK.value)
        .returning(Message.id)
    )
    count = len(marked.all())
    run = await db.get(Run, run_id)
    if run is None:  # it never opened: nothing of it is in the conversation
        return
    data = RunRolledBackData(message_id=by.id, by_run_id=by.run_id, messages=count)
    await append_locked(
        db, await lock_run(db, run_id), [EventIn.of(data, key=f"rolled_back:{by.id}")]
    )


async def mark_failed(db: AsyncSession, run_id: str, reason: str) -> bool:
    """A queued message whose run could not start or open (refused, its workflow gone)."""
    result = await db.execute(
        update(QueuedMessage)
        .where(
            QueuedMessage.run_id == run_id,
            QueuedMessage.state.in_([QueuedState.QUEUED, QueuedState.STARTED]),
            _not_opened(),
        )
        .values(state=QueuedState.FAILED.value, reason=reason[:2000])
        .returning(QueuedMessage.id)
    )
    return result.first() is not None


async def pending_open(db: AsyncSession, session_id: str) -> list[QueuedMessage]:
    return await _pending_open(db, session_id)


async def has_waiting(db: AsyncSession, session_id: str) -> bool:
    stmt = select(
        exists().where(
            QueuedMessage.session_id == session_id, QueuedMessage.state == QueuedState.QUEUED
        )
    )
    return bool((await db.execute(stmt)).scalar())


async def cancel(db: AsyncSession, message_id: str, tenant: str, by: str | None) -> QueuedMessage:
    """Withdraw a message that waits; one whose run started (or that ended otherwise) is
    refused with QueueError and left as it is. Another tenant's is not found."""
    row = await db.get(QueuedMessage, message_id)
    if row is None or row.tenant != tenant:
        raise NotFoundError(f"no queued message {message_id!r}")
    await _locked_session(db, row.session_id, tenant, create=False)
    await db.refresh(row)
    if row.state == QueuedState.CANCELLED:
        return row
    if row.state != QueuedState.QUEUED:
        raise QueueError(
            f"message {message_id!r} is {row.state} (run {row.run_id!r}); only a waiting "
            "message can be cancelled: cancel its run instead"
        )
    row.state = QueuedState.CANCELLED.value
    row.cancelled_at = utcnow()
    row.reason = f"cancelled by {by}" if by else "cancelled"
    return row


async def set_default(
    db: AsyncSession, session_id: str, tenant: str, policy: IfBusy | None
) -> Session:
    """The session's default policy (None: reject); a new session id is made for it."""
    session = await _locked_session(db, session_id, tenant, create=True)
    session.if_busy = policy.value if policy is not None else None
    return session


async def first_waiting_run(db: AsyncSession, session_id: str) -> str | None:
    """The run id of the session's first waiting message (in the order runs start)."""
    stmt = (
        select(QueuedMessage.run_id)
        .where(QueuedMessage.session_id == session_id, QueuedMessage.state == QueuedState.QUEUED)
        .order_by(*START_ORDER)
        .limit(1)
    )
    return (await db.execute(stmt)).scalar_one_or_none()


async def of_session(db: AsyncSession, session_id: str, message_id: str) -> bool:
    """Whether `message_id` is a message of the session (any state)."""
    stmt = select(
        exists().where(QueuedMessage.session_id == session_id, QueuedMessage.id == message_id)
    )
    return bool((await db.execute(stmt)).scalar())


async def listing(db: AsyncSession, session_id: str, *, all_states: bool) -> list[QueuedMessage]:
    stmt = select(QueuedMessage).where(QueuedMessage.session_id == session_id)
    if not all_states:
        stmt = stmt.where(QueuedMessage.state == QueuedState.QUEUED)
        return list((await db.execute(stmt.order_by(*START_ORDER))).scalars())
    return list((await db.execute(stmt.order_by(QueuedMessage.position))).scalars())


async def erase(db: AsyncSession, session_id: str) -> int:
    """A deleted session's queue (agentrun.store.forget, under the session's lock): every
    message's text and config erased, the waiting ones cancelled (their runs never start)."""
    result = await db.execute(
        update(QueuedMessage)
        .where(QueuedMessage.session_id == session_id)
        .values(prompt="", config={}, reason=None)
        .returning(QueuedMessage.id)
    )
    await cancel_waiting(db, session_id)
    return len(result.all())


async def cancel_waiting(db: AsyncSession, session_id: str, reason: str | None = None) -> int:
    """Cancel every message of the session that waits (a deletion: their runs never start)."""
    result = await db.execute(
        update(QueuedMessage)
        .where(QueuedMessage.session_id == session_id, QueuedMessage.state == QueuedState.QUEUED)
        .values(state=QueuedState.CANCELLED.value, cancelled_at=utcnow(), reason=reason)
        .returning(QueuedMessage.id)
    )
    return len(result.all())


async def record_interrupted(
    db: AsyncSession, *, run_id: str, session_id: str, turn: int, text: str
) -> bool:
    """The partial answer of a turn whose run a newer message interrupted while it streamed:
    an assistant message marked interrupted (once), and its message.interrupted event. A run
    cancelled for any other reason keeps its partial text in the event log only, as before."""
    interrupting = select(
        exists().where(
            QueuedMessage.supersedes_run_id == run_id, QueuedMessage.policy == IfBusy.INTERRUPT
        )
    )
    if not (await db.execute(interrupting)).scalar():
        return False
    _, created = await insert_once(
        db,
        Message,
        {
            "idempotency_key": idempotency_key(run_id, turn, MessageState.INTERRUPTED.value),
            "session_id": session_id,
            "run_id": run_id,
            "turn": turn,
            "role": "assistant",
            "content": text,
            "token_estimate": estimate_tokens(text),
            "state": MessageState.INTERRUPTED.value,
        },
        Message.idempotency_key,
    )
    data = MessageInterruptedData(turn=turn, text_chars=len(text))
    await append(db, run_id, [EventIn.of(data, key=f"interrupted:{turn}")])
    return created
