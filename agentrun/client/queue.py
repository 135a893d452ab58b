"""Messages to a session with a double-texting policy (agentrun.protocol.queue.IfBusy).

    handle = await client.start("and now in French", session_id=sid, if_busy="enqueue")
    handle.accepted          # Accepted: message id, position, how many are ahead
    await handle.opened()    # waits until its run starts (the runs before it ended)

A message with a policy (given, or the session's default) is taken by the store under the
session row's lock (agentrun.store.queue.submit): refused (reject, the session busy: SessionBusy)
or recorded at once as a queued message, whose run the session's queue workflow starts when the
session is free. Without a policy (and no session default) a start is the one it always was.
These calls need the store: the decision is made in the database.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from sqlalchemy import select
from temporalio.client import Client

from agentrun.client.errors import AgentRunError, SessionBusy, SessionDeleted, SessionNotFound
from agentrun.contracts import StartRunInput, storage_problems
from agentrun.contracts.queue import Accepted
from agentrun.db.models import DEFAULT_TENANT, QueuedMessage
from agentrun.db.models import Session as SessionRow
from agentrun.protocol.queue import IfBusy, QueuedState
from agentrun.store import NotFoundError, SessionBusyError, SessionNotFoundError
from agentrun.store import queue as store
from agentrun.store.forget import SessionDeletedError

if TYPE_CHECKING:
    from agentrun.store import Repository

__all__ = [
    "MessageNotStarted",
    "MessageRefused",
    "cancel_message",
    "queued_message_of",
    "queued_messages",
    "send_message",
    "session_policy",
    "set_session_policy",
    "wait_started",
]


class MessageRefused(AgentRunError, ValueError):
    """The queue refused the request and changed nothing (a run id already used, a message
    that can no longer be cancelled, ...)."""


class MessageNotStarted(AgentRunError):
    """A queued message ended without its run starting (`.state`: cancelled or failed)."""

    def __init__(self, row: QueuedMessage) -> None:
        why = f": {row.reason}" if row.reason else ""
        super().__init__(f"message {row.id!r} (run {row.run_id!r}) was {row.state}{why}")
        self.message_id = row.id
        self.run_id = row.run_id
        self.state = row.state
        self.reason = row.reason


async def session_policy(repo: Repository, session_id: str) -> IfBusy | None:
    """The session's default policy; None when it has none (or there is no such session)."""
    async with repo.session() as db:
        row = await db.get(SessionRow, session_id)
    return IfBusy(row.if_busy) if row is not None and row.if_busy else None


async def first_waiting(repo: Repository, session_id: str) -> str | None:
    """The run id of the session's first waiting message (a start without a policy is refused
    while there is one: open_run's queue rule, checked early)."""
    async with repo.session() as db:
        return await store.first_waiting_run(db, session_id)


async def send_message(
    client: Client,
    task_queue: str,
    repo: Repository,
    inp: StartRunInput,
    if_busy: IfBusy | str | None,
) -> Accepted:
    """Take the message (policy `if_busy`, else the session's default) and wake the session's
    queue. A busy session under reject raises SessionBusy, another tenant's session
    SessionNotFound, a run id already used MessageRefused; each writes nothing."""
    from activities.sessions import wake_queue  # the activity module owns the queue's wake

    policy = IfBusy(if_busy) if if_busy is not None else None
    problems = storage_problems(inp)
    if problems:  # the database would refuse the queued row: refuse it here, clearly
        raise MessageRefused("the message cannot be stored: " + "; ".join(problems))
    try:
        async with repo.transaction() as db:
            accepted = await store.submit(
                db,
                session_id=inp.session_id,
                run_id=inp.run_id,
                prompt=inp.prompt,
                config=inp.config,
                policy=policy,
                tenant=inp.tenant or DEFAULT_TENANT,
            )
    except SessionBusyError as exc:
        raise SessionBusy(exc.session_id, exc.active_run_id) from None
    except SessionDeletedError as exc:
        raise SessionDeleted(exc.session_id) from None
    except SessionNotFoundError as exc:
        raise SessionNotFound(exc.session_id) from None
    except store.QueueError as exc:
        raise MessageRefused(str(exc)) from None
    if accepted.state == QueuedState.QUEUED:
        try:
            await wake_queue(client, inp.session_id, task_queue)
        except BaseException:
            # Nobody would start it: withdraw it, so that the caller's error is the whole story.
            async with repo.transaction() as db:
                await store.cancel(db, accepted.message_id, inp.tenant or DEFAULT_TENANT, None)
            raise
    return accepted


async def wait_started(repo: Repository, message_id: str, timeout: float | None = None) -> None:
    """Until the message's run has been started (bounded by `timeout` when given: TimeoutError).
    A message cancelled, or whose run could not start, raises MessageNotStarted."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        async with repo.session() as db:
            row = await db.get(QueuedMessage, message_id)
        if row is None:
            raise MessageRefused(f"no queued message {message_id!r}")
        if row.state == QueuedState.STARTED:
            return
        if row.state != QueuedState.QUEUED:
            raise MessageNotStarted(row)
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"message {message_id!r} is still queued after {timeout:g} s")
        # The queue's decision is in the database; no notification announces it.
        await asyncio.sleep(0.2)


async def queued_message_of(repo: Repository, run_id: str) -> QueuedMessage | None:
    """The queued message whose run is `run_id` (any state), or None: a run started the
    ordinary way, or an unknown id."""
    async with repo.session() as db:
        return (
            await db.execute(select(QueuedMessage).where(QueuedMessage.run_id == run_id))
        ).scalar_one_or_none()


async def cancel_message(
    repo: Repository, message_id: str, *, tenant: str | None = None, by: str | None = None
) -> QueuedMessage:
    """Withdraw a queued message before its run starts (again: no change). One whose run
    started raises MessageRefused; an unknown one (or another tenant's) NotFoundError."""
    try:
        async with repo.transaction() as db:
            return await store.cancel(db, message_id, tenant or DEFAULT_TENANT, by)
    except store.QueueError as exc:
        raise MessageRefused(str(exc)) from None


async def queued_messages(
    repo: Repository, session_id: str, *, all_states: bool = False
) -> list[QueuedMessage]:
    """The session's waiting messages in the order they will start (or every one it had)."""
    async with repo.session() as db:
        return await store.listing(db, session_id, all_states=all_states)


async def set_session_policy(
    repo: Repository, session_id: str, policy: IfBusy | str | None, *, tenant: str | None = None
) -> IfBusy | None:
    """Set (None: clear, reject again) the session's default policy; a new session id is made."""
    value = IfBusy(policy) if policy is not None else None
    try:
        async with repo.transaction() as db:
            await store.set_default(db, session_id, tenant or DEFAULT_TENANT, value)
    except SessionDeletedError as exc:
        raise SessionDeleted(exc.session_id) from None
    except SessionNotFoundError as exc:
        raise SessionNotFound(exc.session_id) from None
    except NotFoundError as exc:  # pragma: no cover - set_default makes the session
        raise MessageRefused(str(exc)) from None
    return value
