"""GET /v1/sessions: the tenant's sessions, newest first. GET /v1/sessions/{id}/messages: a
session's transcript, oldest first, each assistant
message with its tool calls and what was decided on them; paged backwards with ?before=.
DELETE /v1/sessions/{id}: forget the session (agentrun.client.forget)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy import select

from agentrun.api.auth import KeyInfo, require
from agentrun.api.lookups import owned_session, services
from agentrun.api.problems import ApiProblem, not_found
from agentrun.client import SessionNotFound
from agentrun.client.forget import SessionActive, delete_session
from agentrun.db.models import Message, ToolCall
from agentrun.protocol.http import (
    MessageView,
    SessionPage,
    SessionSummaryView,
    ToolCallView,
    TranscriptPage,
)
from agentrun.protocol.queue import MessageState
from agentrun.protocol.statuses import Scope

router = APIRouter(prefix="/v1", tags=["sessions"])


class SessionDeletedView(BaseModel):
    session_id: str
    deleted_at: datetime
    runs: list[str]
    cancelled: list[str]
    messages_erased: int
    histories_deleted: int
    history_errors: list[str]


@router.delete("/sessions/{session_id}", response_model=SessionDeletedView)
async def delete(
    request: Request,
    session_id: str,
    key: Annotated[KeyInfo, Depends(require(Scope.WRITE))],
    cancel_active: Annotated[
        bool, Query(description="Cancel a run of the session that has not ended, then delete.")
    ] = False,
) -> SessionDeletedView:
    """Erase the session's text everywhere (usage figures stay), leave a session.deleted
    tombstone in each run's log, delete its runs' Temporal histories. 409 while a run of it
    has not ended, unless cancel_active."""
    svc = services(request)
    await owned_session(svc, session_id, key.tenant)
    try:
        done = await delete_session(
            svc.temporal,
            svc.repo,
            session_id,
            tenant=key.tenant,
            cancel_active=cancel_active,
            by=f"api key {key.name}",
        )
    except SessionNotFound:
        raise not_found("session", session_id) from None
    except SessionActive as exc:
        raise ApiProblem(409, str(exc), kind="session-active", run_ids=exc.run_ids) from None
    return SessionDeletedView(
        session_id=done.session_id,
        deleted_at=done.deleted_at,
        runs=done.run_ids,
        cancelled=done.cancelled,
        messages_erased=done.messages_erased,
        histories_deleted=done.histories_deleted,
        history_errors=done.history_errors,
    )


@router.get("/sessions", response_model=SessionPage)
async def list_sessions(
    request: Request,
    key: Annotated[KeyInfo, Depends(require(Scope.READ))],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> SessionPage:
    svc = services(request)
    try:
        rows, next_cursor = await svc.repo.list_sessions_page(
            key.tenant, limit=limit, cursor=cursor
        )
    except ValueError as exc:
        raise ApiProblem(400, f"bad cursor: {exc}", kind="bad-cursor") from None
    return SessionPage(
        sessions=[
            SessionSummaryView(
                session_id=row.id,
                title=row.title,
                created_at=row.created_at,
                active_run_id=row.active_run_id,
            )
            for row in rows
        ],
        next_cursor=next_cursor,
    )


@router.get("/sessions/{session_id}/messages", response_model=TranscriptPage)
async def messages(
    request: Request,
    session_id: str,
    key: Annotated[KeyInfo, Depends(require(Scope.READ))],
    before: Annotated[int | None, Query(ge=1, description="Messages older than this id.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> TranscriptPage:
    svc = services(request)
    await owned_session(svc, session_id, key.tenant)
    newest_first = await svc.repo.session_messages_before(session_id, before, limit + 1)
    more = len(newest_first) > limit
    rows = list(reversed(newest_first[:limit]))
    calls = await _calls_of(svc.repo, rows)
    views = [_message(m, calls) for m in rows]
    return TranscriptPage(
        session_id=session_id, messages=views, next_before=rows[0].id if more and rows else None
    )


async def _calls_of(repo: object, rows: list[Message]) -> dict[tuple[str, str], ToolCall]:
    wanted = {(m.run_id, c.get("id")) for m in rows for c in (m.tool_calls or [])}
    run_ids = {run_id for run_id, _ in wanted}
    if not run_ids:
        return {}
    async with repo.session() as db:  # type: ignore[attr-defined]
        found = await db.execute(select(ToolCall).where(ToolCall.run_id.in_(run_ids)))
        return {(c.run_id, c.tool_call_id): c for c in found.scalars()}


def _message(m: Message, calls: dict[tuple[str, str], ToolCall]) -> MessageView:
    views = []
    for part in m.tool_calls or []:
        call = calls.get((m.run_id, part.get("id")))
        function = part.get("function") or {}
        if call is None:
            views.append(
                ToolCallView(
                    tool_call_id=str(part.get("id")),
                    name=str(function.get("name", "")),
                    arguments=str(function.get("arguments", "")),
                    status="unknown",
                )
            )
            continue
        views.append(
            ToolCallView(
                tool_call_id=call.tool_call_id,
                name=call.name,
                arguments=call.arguments,
                status=call.status,
                decision=call.decision,
                decided_by=call.decided_by,
                decision_reason=call.decision_reason,
                decided_at=call.decided_at,
                decided_arguments=call.decided_arguments,
                started_at=call.started_at,
                finished_at=call.finished_at,
                result=call.result,
                is_error=call.is_error,
            )
        )
    return MessageView(
        id=m.id,
        run_id=m.run_id,
        turn=m.turn,
        role=m.role,
        content=m.content,
        tool_call_id=m.tool_call_id,
        name=m.name,
        created_at=m.created_at,
        state=MessageState(m.state) if m.state else None,
        kind=m.kind or "message",
        covers_to_id=m.covers_to_id,
        tool_calls=views,
    )
