"""/v1/runs: start (idempotent with an Idempotency-Key), list, get, cancel."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response

from agentrun.api import subruns
from agentrun.api.auth import KeyInfo, require
from agentrun.api.lookups import (
    Services,
    links,
    owned_run,
    services,
    session_tenant,
    starting_run,
)
from agentrun.api.problems import ApiProblem, not_found
from agentrun.api.queue import queued_response, queued_run
from agentrun.client import (
    MessageRefused,
    RunEnded,
    RunNotFound,
    SessionBusy,
    SessionNotFound,
    cancel_run,
    new_id,
    start_run,
)
from agentrun.client.errors import SessionDeleted
from agentrun.client.queue import session_policy
from agentrun.db.models import Run, ToolCall
from agentrun.protocol.http import (
    CancelRunRequest,
    CancelView,
    PendingCallView,
    RunPage,
    RunSummaryView,
    RunView,
    StartRunRequest,
    StartRunResponse,
    UsageView,
)
from agentrun.protocol.names import SA_MODEL, SA_SESSION_ID
from agentrun.protocol.statuses import RunStatus, Scope, ToolCallStatus, WaitKind
from agentrun.store.tenancy import IdempotencyMismatch
from agentrun.store.usage import run_usage

router = APIRouter(prefix="/v1", tags=["runs"])

IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,200}$"


def request_sha256(body: StartRunRequest) -> str:
    """The hash an Idempotency-Key is bound to: the fields the caller sent (a null is as good as
    leaving the field out), validated, in canonical JSON: key order and spacing do not count,
    and defaults are not in it, so a retry after an upgrade that changed one still matches."""
    canonical = json.dumps(
        body.model_dump(mode="json", exclude_unset=True, exclude_none=True),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@router.post(
    "/runs",
    status_code=201,
    response_model=StartRunResponse,
    responses={
        200: {"model": StartRunResponse, "description": "An idempotent retry: the same run."},
        409: {"description": "The session has an active run (active_run_id)."},
        422: {"description": "Invalid body, or an Idempotency-Key used with another body."},
    },
)
async def start(
    request: Request,
    response: Response,
    body: StartRunRequest,
    key: Annotated[KeyInfo, Depends(require(Scope.WRITE))],
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", pattern=IDEMPOTENCY_KEY_PATTERN)
    ] = None,
) -> StartRunResponse:
    svc = services(request)
    run_id, claimed = new_id("run"), False
    if idempotency_key is not None:
        run_id, claimed = await _claim(svc, key.tenant, idempotency_key, body, run_id)
        if not claimed:
            response.status_code = 200
            existing = await svc.repo.find_run(run_id)
            if existing is not None:
                return _started(existing.id, existing.session_id, existing.status)
    try:
        return await _start(svc, key.tenant, body, run_id)
    except ApiProblem:
        if idempotency_key is not None and claimed:
            await _release(svc, key.tenant, idempotency_key, run_id)
        raise


async def _claim(
    svc: Services, tenant: str, key: str, body: StartRunRequest, run_id: str
) -> tuple[str, bool]:
    try:
        owner, claimed = await svc.repo.claim_idempotency_key(
            tenant, key, request_sha256(body), run_id
        )
    except IdempotencyMismatch:
        raise ApiProblem(
            422,
            f"the Idempotency-Key {key!r} was used with a different body; use a new key for a "
            "new run",
            kind="idempotency-key-reused",
        ) from None
    return str(owner), bool(claimed)


async def _release(svc: Services, tenant: str, key: str, run_id: str) -> None:
    # A start refused before anything ran leaves no trace: the key is free for the next try.
    await svc.repo.release_idempotency_key(tenant, key, run_id)


async def _start(
    svc: Services, tenant: str, body: StartRunRequest, run_id: str
) -> StartRunResponse:
    # A new session's id comes from the run's: a retry under the same Idempotency-Key that
    # arrives before a worker opened the run names the same session, not a fresh one.
    session_id = body.session_id or "session-" + run_id.removeprefix("run-")
    owner = await session_tenant(svc, session_id)
    if owner is not None and owner != tenant:
        raise not_found("session", session_id)
    queued = body.if_busy is not None or await session_policy(svc.repo, session_id) is not None
    holder = None if queued else await svc.repo.session_holder(session_id)
    if holder is not None and holder != run_id:
        raise _busy(session_id, holder)
    try:
        handle = await start_run(
            svc.temporal,
            svc.settings.task_queue,
            body.prompt,
            session_id=session_id,
            run_id=run_id,
            config=body.config,
            repo=svc.repo,
            tenant=tenant,
            if_busy=body.if_busy,
        )
    except MessageRefused as exc:
        raise ApiProblem(409, str(exc), kind="message-refused") from None
    except SessionBusy as exc:
        raise _busy(session_id, exc.active_run_id) from None
    except RunEnded as exc:
        # An idempotent retry of a run that has ended since.
        run = await svc.repo.find_run(run_id)
        return _started(run_id, run.session_id if run else session_id, exc.status or "DONE")
    except SessionDeleted as exc:
        raise ApiProblem(404, str(exc), kind="not-found") from None
    except SessionNotFound:
        raise not_found("session", session_id) from None
    return queued_response(_started(run_id, session_id, RunStatus.QUEUED), handle.accepted)


def _busy(session_id: str, active_run_id: str) -> ApiProblem:
    return ApiProblem(
        409,
        f"session {session_id!r} has an active run {active_run_id!r}; wait for it to end or "
        "cancel it, then start the new run",
        kind="session-busy",
        session_id=session_id,
        active_run_id=active_run_id,
    )


def _started(run_id: str, session_id: str, status: str) -> StartRunResponse:
    return StartRunResponse(
        run_id=run_id, session_id=session_id, status=RunStatus(status), links=links(run_id)
    )


@router.get("/runs", response_model=RunPage)
async def list_runs(
    request: Request,
    key: Annotated[KeyInfo, Depends(require(Scope.READ))],
    session_id: str | None = None,
    status: RunStatus | None = None,
    waiting_approval: bool = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> RunPage:
    svc = services(request)
    try:
        rows, next_cursor = await svc.repo.list_runs_page(
            key.tenant,
            session_id=session_id,
            status=status,
            waiting_approval=waiting_approval,
            limit=limit,
            cursor=cursor,
        )
    except ValueError as exc:
        raise ApiProblem(400, f"bad cursor: {exc}", kind="bad-cursor") from None
    return RunPage(runs=[_summary(r) for r in rows], next_cursor=next_cursor)


def _summary(run: Run) -> RunSummaryView:
    return RunSummaryView(
        run_id=run.id,
        session_id=run.session_id,
        status=RunStatus(run.status),
        model=run.model,
        created_at=run.created_at,
        finished_at=run.finished_at,
        links=links(run.id),
        usage=UsageView(**run_usage(run).model_dump()),
        parent_run_id=run.parent_run_id,
    )


@router.get("/runs/{run_id}", response_model=RunView)
async def get_run(
    request: Request, run_id: str, key: Annotated[KeyInfo, Depends(require(Scope.READ))]
) -> RunView:
    svc = services(request)
    try:
        run = await owned_run(svc, run_id, key.tenant)
    except ApiProblem as exc:
        queued = await queued_run(svc, run_id, key.tenant) if exc.status == 404 else None
        if queued is None:
            raise
        return queued
    if run is None:
        return await _not_opened(svc, run_id)
    pending = await svc.repo.pending_tool_calls(run_id)
    summary = _summary(run).model_dump()
    kids = await subruns.children(svc, run)
    return RunView(
        **summary,
        error=run.error,
        final_text=run.final_text,
        updated_at=run.updated_at,
        last_event_seq=run.last_event_seq,
        pending=[_pending(run, call) for call in pending],
        children=kids,
        waiting_on=await subruns.waiting_on(svc, run, key.tenant) if kids else [],
    )


async def _not_opened(svc: Services, run_id: str) -> RunView:
    # Started, and no worker has opened it yet: queued, in the session it was started in.
    desc = await starting_run(svc, run_id)
    return RunView(
        run_id=run_id,
        session_id=desc.typed_search_attributes.get(SA_SESSION_ID) or "",
        status=RunStatus.QUEUED,
        model=desc.typed_search_attributes.get(SA_MODEL) or "",
        created_at=desc.start_time,
        links=links(run_id),
        usage=UsageView(),
    )


def _pending(run: Run, call: ToolCall) -> PendingCallView:
    client_tools = {t.get("name") for t in (run.config or {}).get("client_tools") or []}
    waits_for_person = call.status == ToolCallStatus.PENDING_APPROVAL
    kind = (
        WaitKind.CLIENT_RESULT
        if call.name in client_tools and not waits_for_person
        else WaitKind.APPROVAL
    )
    return PendingCallView(
        tool_call_id=call.tool_call_id,
        name=call.name,
        kind=kind,
        arguments=call.arguments,
        arguments_sha256=call.arguments_sha256,
        turn=call.turn,
    )


@router.post("/runs/{run_id}/cancel", response_model=CancelView)
async def cancel(
    request: Request,
    run_id: str,
    key: Annotated[KeyInfo, Depends(require(Scope.WRITE))],
    body: Annotated[CancelRunRequest | None, Body()] = None,
) -> CancelView:
    svc = services(request)
    await owned_run(svc, run_id, key.tenant)
    try:
        answer = await cancel_run(
            svc.temporal, run_id, reason=body.reason if body else None, requested_by=key.name
        )
    except RunNotFound:
        raise not_found("run", run_id) from None
    return CancelView(run_id=run_id, status=str(answer.status), message=answer.message)
