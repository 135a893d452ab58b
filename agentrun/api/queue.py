"""A session's message queue over HTTP (double-texting): the messages waiting, withdrawing one,
and the session's default policy. Messages are sent with POST /v1/runs and its `if_busy`."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from agentrun.api.auth import KeyInfo, require
from agentrun.api.lookups import Services, links, owned_session, services, session_tenant
from agentrun.api.problems import ApiProblem, not_found
from agentrun.client import MessageRefused, SessionNotFound, cancel_message, queued_messages
from agentrun.client.queue import queued_message_of, set_session_policy
from agentrun.contracts.queue import Accepted
from agentrun.contracts.run import ID_PATTERN
from agentrun.db.models import QueuedMessage
from agentrun.protocol.http import (
    QueuedMessageView,
    QueuePage,
    RunView,
    SessionPolicyRequest,
    StartRunResponse,
)
from agentrun.protocol.queue import IfBusy, QueuedState
from agentrun.protocol.statuses import RunStatus, Scope
from agentrun.store import NotFoundError
from agentrun.store import queue as queue_store

router = APIRouter(prefix="/v1", tags=["sessions"])


def queued_response(response: StartRunResponse, accepted: Accepted | None) -> StartRunResponse:
    """POST /v1/runs's answer, with where the message stands when a policy applied."""
    if accepted is None:
        return response
    return response.model_copy(
        update={
            "message_id": accepted.message_id,
            "if_busy": accepted.policy,
            "ahead": accepted.ahead,
            "active_run_id": accepted.active_run_id,
        }
    )


async def queued_run(svc: Services, run_id: str, tenant: str) -> RunView | None:
    """GET /v1/runs/{id} of a queued message's run that has not started: QUEUED (None when
    there is no such message of this tenant, or its run will never start)."""
    if not re.match(ID_PATTERN, run_id):  # not a run id (a NUL, too long): nothing to look up
        return None
    row = await queued_message_of(svc.repo, run_id)
    if row is None or row.tenant != tenant or row.state != QueuedState.QUEUED:
        return None
    return RunView(
        run_id=run_id,
        session_id=row.session_id,
        status=RunStatus.QUEUED,
        model=str((row.config or {}).get("model") or ""),
        created_at=row.created_at,
        links=links(run_id),
    )


def _view(row: QueuedMessage) -> QueuedMessageView:
    return QueuedMessageView(
        message_id=row.id,
        run_id=row.run_id,
        session_id=row.session_id,
        position=row.position,
        if_busy=IfBusy(row.policy),
        state=QueuedState(row.state),
        preempt=row.preempt,
        supersedes_run_id=row.supersedes_run_id,
        reason=row.reason,
        created_at=row.created_at,
        started_at=row.started_at,
        cancelled_at=row.cancelled_at,
    )


# queued_messages.id is VARCHAR(40).
MESSAGE_ID_CHARS = 40


@router.get("/sessions/{session_id}/queue", response_model=QueuePage)
async def queue(
    request: Request,
    session_id: str,
    key: Annotated[KeyInfo, Depends(require(Scope.READ))],
    all: bool = False,
) -> QueuePage:
    """The messages waiting, in the order their runs will start (`?all=true`: every message
    the session queued, in arrival order, whatever became of it)."""
    svc = services(request)
    session = await owned_session(svc, session_id, key.tenant)
    rows = await queued_messages(svc.repo, session_id, all_states=all)
    return QueuePage(
        session_id=session_id,
        if_busy=IfBusy(session.if_busy) if session.if_busy else None,
        messages=[_view(r) for r in rows],
    )


@router.delete(
    "/sessions/{session_id}/queue/{message_id}",
    response_model=QueuedMessageView,
    responses={409: {"description": "Its run has started: cancel the run instead."}},
)
async def cancel_queued(
    request: Request,
    session_id: str,
    message_id: str,
    key: Annotated[KeyInfo, Depends(require(Scope.WRITE))],
) -> QueuedMessageView:
    """Withdraw a message that waits; its run never starts. Again: the same answer."""
    svc = services(request)
    await owned_session(svc, session_id, key.tenant)
    # Not a message id (too long, a NUL): nothing to look up.
    if len(message_id) > MESSAGE_ID_CHARS or not re.match(ID_PATTERN, message_id):
        raise not_found("queued message", message_id)
    async with svc.repo.session() as db:
        if not await queue_store.of_session(db, session_id, message_id):
            raise not_found("queued message", message_id)
    try:
        row = await cancel_message(svc.repo, message_id, tenant=key.tenant, by=key.name)
    except NotFoundError:
        raise not_found("queued message", message_id) from None
    except MessageRefused as exc:
        raise ApiProblem(409, str(exc), kind="message-started") from None
    return _view(row)


@router.put("/sessions/{session_id}/if-busy", response_model=QueuePage)
async def set_policy(
    request: Request,
    session_id: str,
    body: SessionPolicyRequest,
    key: Annotated[KeyInfo, Depends(require(Scope.WRITE))],
) -> QueuePage:
    """Set the session's default policy (a new session id is made for this tenant)."""
    svc = services(request)
    owner = await session_tenant(svc, session_id) if re.match(ID_PATTERN, session_id) else "-"
    if owner is not None and owner != key.tenant:
        raise not_found("session", session_id)
    try:
        policy = await set_session_policy(svc.repo, session_id, body.if_busy, tenant=key.tenant)
    except SessionNotFound:
        raise not_found("session", session_id) from None
    rows = await queued_messages(svc.repo, session_id)
    return QueuePage(session_id=session_id, if_busy=policy, messages=[_view(r) for r in rows])
