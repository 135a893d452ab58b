"""GET/PUT /v1/sessions/{id}/budget: a session's budget and what its runs used so far (README
"Cost and budgets"). The same store functions as `agentrun budget`: a limit left out of the PUT
keeps its value, null clears it; the session's next run checks the budget when it opens."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from agentrun.api.auth import KeyInfo, require
from agentrun.api.lookups import owned_session, services, session_tenant
from agentrun.api.problems import ApiProblem, not_found
from agentrun.contracts.run import ID_PATTERN
from agentrun.db.models import Session
from agentrun.protocol.http import SessionBudgetRequest, SessionBudgetView, UsageView
from agentrun.protocol.statuses import Scope
from agentrun.store import NotFoundError
from agentrun.store.usage import check_session_budget

router = APIRouter(prefix="/v1", tags=["sessions"])


async def _view(request: Request, session: Session) -> SessionBudgetView:
    used = await services(request).repo.session_usage(session.id)
    return SessionBudgetView(
        session_id=session.id,
        max_cost_usd=session.max_cost_usd,
        max_total_tokens=session.max_total_tokens,
        used=UsageView(**used.model_dump()),
        used_total_tokens=used.total_tokens,
    )


@router.get("/sessions/{session_id}/budget", response_model=SessionBudgetView)
async def get_budget(
    request: Request, session_id: str, key: Annotated[KeyInfo, Depends(require(Scope.READ))]
) -> SessionBudgetView:
    """The session's budget (null limits: none) and the usage of all its runs so far."""
    session = await owned_session(services(request), session_id, key.tenant)
    return await _view(request, session)


@router.put(
    "/sessions/{session_id}/budget",
    response_model=SessionBudgetView,
    responses={422: {"description": "A limit out of range, or a body that sets nothing."}},
)
async def put_budget(
    request: Request,
    session_id: str,
    body: SessionBudgetRequest,
    key: Annotated[KeyInfo, Depends(require(Scope.WRITE))],
) -> SessionBudgetView:
    """Set the session's budget (a new session id is made for this tenant, so a budget can be
    set before the first run). A run already going keeps the budget it opened with."""
    svc = services(request)
    given = body.model_fields_set
    if not given:
        raise ApiProblem(
            422,
            "give max_cost_usd and/or max_total_tokens (null clears one)",
            kind="invalid-request",
        )
    try:
        check_session_budget(body.max_cost_usd, body.max_total_tokens)
    except ValueError as exc:
        raise ApiProblem(422, str(exc), kind="invalid-request") from None
    owner = await session_tenant(svc, session_id) if re.match(ID_PATTERN, session_id) else "-"
    if owner is not None and owner != key.tenant:
        raise not_found("session", session_id)
    current = await owned_session(svc, session_id, key.tenant) if owner is not None else None
    if current is not None and current.deleted_at is not None:
        raise ApiProblem(404, f"session {session_id!r} was deleted", kind="not-found")
    try:
        # A limit left out keeps its value: only the given ones are written.
        session = await svc.repo.set_session_budget(
            session_id, body.max_cost_usd, body.max_total_tokens, tenant=key.tenant, only=given
        )
    except NotFoundError:  # made by another tenant since the look above
        raise not_found("session", session_id) from None
    return await _view(request, session)
