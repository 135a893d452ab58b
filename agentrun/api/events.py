"""GET /v1/runs/{id}/events: the run's event log as Server-Sent Events (id = seq, event = type,
data = the typed payload as JSON), live until the run's terminal event, resumable with
Last-Event-ID or ?after=; or, with Accept: application/json, one page of events for clients
that poll. The events come from agentrun.client's follow (the store's hub)."""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from agentrun.api.auth import KeyInfo, require
from agentrun.api.lookups import Services, owned_run, services
from agentrun.api.problems import ApiProblem
from agentrun.api.queued_follow import QueuedGone, queued_message, until_opened
from agentrun.client import AgentRunError, RunHandle
from agentrun.db.models import QueuedMessage, RunEvent
from agentrun.protocol.events import EventType, UnknownEvent, parse_event
from agentrun.protocol.http import EventPage, EventView
from agentrun.protocol.statuses import RunStatus, Scope
from agentrun.telemetry.api_metrics import followed

router = APIRouter(prefix="/v1", tags=["events"])

MAX_SEQ = 2**63 - 1
# How long a stream waits for a just-started run to be opened by a worker.
OPEN_TIMEOUT_S = 60.0
# A client that has not taken an event for this long is dropped (it reconnects with its
# Last-Event-ID and loses nothing).
SEND_TIMEOUT_S = 60.0


def parse_cursor(value: str, what: str) -> int:
    text = value.strip()
    if not text.isdigit() or not text.isascii() or int(text) > MAX_SEQ:
        raise ApiProblem(
            400,
            f"{what} must be an event seq (a whole number, 0 or more), not {value[:40]!r}",
            kind="bad-cursor",
        )
    return int(text)


def _cursor(request: Request, after: str | None) -> int:
    # A reconnecting EventSource sends Last-Event-ID with its first URL: the header wins.
    last_event_id = request.headers.get("last-event-id")
    if last_event_id is not None:
        return parse_cursor(last_event_id, "Last-Event-ID")
    if after is not None:
        return parse_cursor(after, "after")
    return 0


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/event-stream" not in accept


def event_data(row: RunEvent) -> dict[str, Any]:
    """A stored event's payload as the typed protocol model gives it (an unknown type as
    stored): what the SSE frame and the JSON page both carry."""
    event = parse_event(row.run_id, row.seq, row.type, row.data, row.created_at)
    if isinstance(event, UnknownEvent):
        return dict(event.data)
    return event.data.model_dump(mode="json")


@router.get(
    "/runs/{run_id}/events",
    responses={
        200: {
            "description": "text/event-stream (default), or with Accept: application/json a "
            "page of events (EventPage).",
            "content": {
                "text/event-stream": {},
                "application/json": {"schema": EventPage.model_json_schema()},
            },
        },
        400: {"description": "A malformed Last-Event-ID or ?after=."},
    },
)
async def events(
    request: Request,
    run_id: str,
    key: Annotated[KeyInfo, Depends(require(Scope.READ, query_token=True))],
    after: Annotated[str | None, Query(description="Start after this seq.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size (JSON only).")] = 100,
    access_token: Annotated[
        str | None,
        Query(description="The API key, for EventSource clients that cannot send headers."),
    ] = None,
) -> Any:
    cursor = _cursor(request, after)
    svc = services(request)
    queued = None
    try:
        run = await owned_run(svc, run_id, key.tenant)
    except ApiProblem as exc:
        queued = await _queued(svc, run_id, key.tenant) if exc.status == 404 else None
        if queued is None:
            raise
        run = None
    if _wants_json(request):
        if queued is not None:  # its message waits in the session's queue (README)
            return EventPage(events=[], next_after=cursor, ended=False, status=RunStatus.QUEUED)
        return await _page(svc, run_id, cursor, limit, opened=run is not None)
    draining = request.app.state.draining
    return EventSourceResponse(
        followed(request, _stream(svc, run_id, cursor, draining, queued)),
        ping=svc.settings.http_heartbeat_s,
        send_timeout=SEND_TIMEOUT_S,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _page(svc: Services, run_id: str, after: int, limit: int, *, opened: bool) -> EventPage:
    if not opened:
        return EventPage(events=[], next_after=after, ended=False)
    # The run first: if it had ended then, every event it will ever have is already written.
    run = await svc.repo.find_run(run_id)
    rows = await svc.repo.read_events(run_id, after, limit)
    views = []
    for row in rows:
        views.append(
            EventView(seq=row.seq, type=row.type, data=event_data(row), created_at=row.created_at)
        )
    next_after = rows[-1].seq if rows else after
    ended = run is not None and RunStatus(run.status).terminal and next_after >= run.last_event_seq
    return EventPage(events=views, next_after=next_after, ended=ended)


async def _queued(svc: Services, run_id: str, tenant: str) -> QueuedMessage | None:
    try:
        return await queued_message(svc, run_id, tenant)
    except QueuedGone as gone:
        raise gone.problem() from None


async def _stream(
    svc: Services,
    run_id: str,
    after: int,
    draining: asyncio.Event,
    queued: QueuedMessage | None = None,
) -> AsyncIterator[bytes]:
    handle = RunHandle(svc.temporal, run_id, store=svc.repo)
    try:
        if queued is not None and not await until_opened(svc, queued, OPEN_TIMEOUT_S, draining):
            return
        if await svc.repo.find_run(run_id) is None:
            await handle.opened(OPEN_TIMEOUT_S)
        # The hub ends the stream when the server drains (Server.shutdown sets `draining`
        # and wakes every follower): the client resumes elsewhere from its Last-Event-ID.
        async with aclosing(svc.repo.follow_events(run_id, after, stop=draining)) as followed:
            async for row in followed:
                yield _encoded(row)
    except QueuedGone as gone:  # withdrawn while the stream waited for it
        yield gone.final_event()
    except (AgentRunError, LookupError) as exc:
        # The run was never opened (refused, cancelled first, no worker): say so and end.
        yield ServerSentEvent(
            data=json.dumps({"message": str(exc), "retryable": False}),
            event=EventType.ERROR.value,
        ).encode()


# The hub hands the same event row to every follower of a run: its SSE frame is made once for
# all of them (parsing the typed payload and encoding it was most of a stream's per-event cost
# with 20 followers a run), and forgotten with the row.
_FRAMES: weakref.WeakKeyDictionary[RunEvent, bytes] = weakref.WeakKeyDictionary()


def _encoded(row: RunEvent) -> bytes:
    frame = _FRAMES.get(row)
    if frame is None:
        frame = ServerSentEvent(
            data=json.dumps(event_data(row), separators=(",", ":")),
            event=row.type,
            id=str(row.seq),
        ).encode()
        _FRAMES[row] = frame
    return frame
