"""Sessions and runs: open a run (claiming its session), move its status forward, read it.

Run statuses only move forward: a terminal status (DONE, FAILED, CANCELED) is never overwritten
and a status never moves back (QUEUED after RUNNING). A session is held by one run at a time;
`session_holder` is the one place that says whether it is.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agentrun.contracts import AgentConfig
from agentrun.db.models import DEFAULT_TENANT, Message, Run, RunStatus, Session
from agentrun.protocol.events import RunStatusData
from agentrun.store.engine import NotFoundError, idempotency_key, insert_once, utcnow
from agentrun.store.events import EventIn, append_locked, lock_run
from agentrun.store.keys import check_name
from agentrun.store.turns import estimate_tokens

# The key of a run's first event; stored: never change.
QUEUED_EVENT_KEY = "status:QUEUED"


class SessionBusyError(RuntimeError):
    """A second run was started on a session while another run holds it."""

    def __init__(self, session_id: str, active_run_id: str) -> None:
        super().__init__(
            f"session {session_id!r} already has an active run {active_run_id!r}; wait for it "
            "to finish or cancel it, then start the new run"
        )
        self.session_id = session_id
        self.active_run_id = active_run_id


class SessionNotFoundError(NotFoundError):
    """A run named a session of another tenant. Session ids are one namespace for all tenants,
    so the id is taken; the message does not say whose it is."""

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"no session {session_id!r} for this tenant: session ids are shared by all "
            "tenants, so start the run in a session of your own (a new session id)"
        )
        self.session_id = session_id


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


async def session_holder(db: AsyncSession, session_id: str, *, lock: bool = False) -> str | None:
    """The run that holds the session and has not ended, or None: the session-busy rule.

    With `lock`, the session row stays locked until the transaction ends (to claim it)."""
    stmt = select(Session.active_run_id).where(Session.id == session_id)
    if lock:
        stmt = stmt.with_for_update()
    holder = (await db.execute(stmt)).scalar_one_or_none()
    if not holder:
        return None
    status = (await db.execute(select(Run.status).where(Run.id == holder))).scalar()
    if status is None or RunStatus(status).terminal:
        return None
    return holder


def refuse_if_held(session_id: str, holder: str | None, run_id: str) -> None:
    """SessionBusyError unless the session is free or held by this very run."""
    if holder is not None and holder != run_id:
        raise SessionBusyError(session_id, holder)


async def _session_for_run(db: AsyncSession, session_id: str, tenant: str) -> Session:
    """The session a run opens in, made if new; one of another tenant or deleted is refused."""
    session, _ = await insert_once(
        db, Session, {"id": session_id, "metadata_": {}, "tenant": tenant}, Session.id
    )
    # A session's tenant never changes once it is made, so no lock is needed to compare it.
    if session.tenant != tenant:
        raise SessionNotFoundError(session_id)
    if session.deleted_at is not None:
        raise _deleted(session_id)
    return session


async def open_run(
    db: AsyncSession,
    *,
    run_id: str,
    session_id: str,
    model: str,
    config: AgentConfig,
    prompt: str,
    workflow_run_id: str | None = None,
    model_endpoint: str | None = None,
    tenant: str = DEFAULT_TENANT,
    parent_run_id: str | None = None,
) -> Run:
    """Create the run (claiming its session), its user message and the QUEUED event in one
    transaction. A repeat by the same workflow execution (a retried step) returns the run as
    it is and writes nothing.

    A run is driven by the one execution that opened it: a run that already ended raises
    RunEndedError, and one opened by another execution (`workflow_run_id` differs) raises
    RunOwnedError, both writing nothing. A run opened before executions were recorded is taken
    by the first execution that opens it again. A busy session raises SessionBusyError. The
    run and its session are of `tenant`; a session of another tenant raises
    SessionNotFoundError before anything else is said of it (not whether it is busy).
    """
    check_name("tenant", tenant)
    await _session_for_run(db, session_id, tenant)
    existing = await db.get(Run, run_id)
    if existing is not None:
        if existing.session_id != session_id:
            raise ValueError(f"run {run_id!r} already exists in session {existing.session_id!r}")
        return await _reopen(db, run_id, workflow_run_id)
    refuse_if_held(session_id, await session_holder(db, session_id, lock=True), run_id)
    # Again under the lock: a deletion may have committed while this waited for it.
    if (await db.execute(select(Session.deleted_at).where(Session.id == session_id))).scalar():
        raise _deleted(session_id)
    from agentrun.store.queue import refuse_if_queued  # imports this module

    await refuse_if_queued(db, session_id, run_id)
    await db.execute(update(Session).where(Session.id == session_id).values(active_run_id=run_id))
    run, created = await insert_once(
        db,
        Run,
        {
            "id": run_id,
            "session_id": session_id,
            "model": model,
            "config": config.model_dump(mode="json"),
            "status": RunStatus.QUEUED.value,
            "workflow_run_id": workflow_run_id,
            "tenant": tenant,
            **({"parent_run_id": parent_run_id} if parent_run_id else {}),
        },
        Run.id,
    )
    if not created:
        return await _reopen(db, run_id, workflow_run_id)
    await insert_once(
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
    queued = RunStatusData(
        status=RunStatus.QUEUED, session_id=session_id, model=model, prompt=prompt[:2000]
    )
    if model_endpoint is not None:  # stored only when known (EventIn.of dumps exclude_unset)
        queued.model_endpoint = model_endpoint
    await append_locked(db, run, [EventIn.of(queued, key=QUEUED_EVENT_KEY)])
    return run


async def resume_run(db: AsyncSession, run_id: str, first_execution_run_id: str) -> Run:
    """The run, taken over by a later execution of the workflow chain that opened it (its
    continue-as-new: same workflow id, a new Temporal run id). The chain is named by its first
    execution's run id, the one that opened the run and is stored as its owner: a run that
    ended raises RunEndedError and one opened by another chain (a closed run id started again)
    RunOwnedError, both writing nothing; an unknown run raises NotFoundError."""
    return await _reopen(db, run_id, first_execution_run_id)


def _deleted(session_id: str) -> SessionNotFoundError:
    from agentrun.store.forget import SessionDeletedError  # forget.py imports this module

    return SessionDeletedError(session_id)


async def _reopen(db: AsyncSession, run_id: str, workflow_run_id: str | None) -> Run:
    run = await lock_run(db, run_id)
    if RunStatus(run.status).terminal:
        raise RunEndedError(run_id, run.status)
    if workflow_run_id is not None:
        if run.workflow_run_id is None:
            run.workflow_run_id = workflow_run_id
        elif run.workflow_run_id != workflow_run_id:
            raise RunOwnedError(run_id, run.workflow_run_id)
    return run


async def set_run_status(
    db: AsyncSession,
    run_id: str,
    status: RunStatus,
    *,
    error: str | None = None,
    final_text: str | None = None,
) -> tuple[Run, bool]:
    """Move the run forward to `status`; returns (run, changed).

    A terminal status is never overwritten and a status never moves back; such a late write
    changes nothing. A change appends a run.status event in the same transaction, and a
    terminal one frees the run's session.
    """
    run = await lock_run(db, run_id)
    current = RunStatus(run.status)
    if current == status or current.terminal or status.rank < current.rank:
        return run, False
    run.status = status.value
    run.updated_at = utcnow()
    if error is not None:
        run.error = error
    if final_text is not None:
        run.final_text = final_text
    if status.terminal:
        run.finished_at = utcnow()
        await db.execute(
            update(Session)
            .where(Session.id == run.session_id, Session.active_run_id == run_id)
            .values(active_run_id=None)
        )
    # Only the fields given are stored (EventIn.of dumps exclude_unset): no `error: null`.
    data = (
        RunStatusData(status=status, previous=current)
        if error is None
        else RunStatusData(status=status, previous=current, error=error)
    )
    await append_locked(db, run, [EventIn.of(data)])
    return run, True


async def get_run(db: AsyncSession, run_id: str) -> Run:
    run = await db.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"no run with id {run_id!r}")
    return run


async def final_assistant_text(db: AsyncSession, run_id: str) -> str:
    """The text of the run's last assistant message: a finished run's answer."""
    text_ = (
        await db.execute(
            select(Message.content)
            .where(Message.run_id == run_id, Message.role == "assistant")
            .order_by(Message.turn.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return text_ or ""
