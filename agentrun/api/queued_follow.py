"""GET /v1/runs/{id}/events of a queued message's run (double-texting, README "Sessions and
double-texting"): the run does not exist before its message leaves the session's queue, yet
its id was given when the message was accepted, so a client follows it at once.

- JSON page: an empty page with `status` QUEUED (`ended` false): poll again.
- SSE: the stream stays open (heartbeats) until the message's run starts, then delivers the
  run's events from the first, as for any run. A message withdrawn (or whose run could not
  start) while the stream waits ends it with a final `error` event {message, retryable: false,
  kind: "message-cancelled" | "message-failed", message_id}. Asked after that, both answer 404
  with the same `kind`: no run will ever have that id.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import TYPE_CHECKING

from sse_starlette import ServerSentEvent

from agentrun.api.problems import ApiProblem
from agentrun.client import AgentRunError, RunHandle, RunNotFound
from agentrun.client.queue import queued_message_of
from agentrun.contracts.run import ID_PATTERN
from agentrun.protocol.events import EventType
from agentrun.protocol.queue import QueuedState

if TYPE_CHECKING:
    from agentrun.api.lookups import Services
    from agentrun.db.models import QueuedMessage

# How often a stream that waits for a queued message looks at it (a database read each time;
# no notification announces the queue's decisions).
QUEUE_POLL_S = 1.0


class QueuedGone(AgentRunError):
    """The queued message will never become a run (withdrawn, or its run could not start)."""

    def __init__(self, row: QueuedMessage) -> None:
        why = f": {row.reason}" if row.reason else ""
        super().__init__(
            f"run {row.run_id!r} never started: its queued message {row.id!r} was {row.state}{why}"
        )
        self.kind = f"message-{row.state}"
        self.message_id = row.id

    def problem(self) -> ApiProblem:
        return ApiProblem(404, str(self), kind=self.kind, message_id=self.message_id)

    def final_event(self) -> bytes:
        body = {"message": str(self), "retryable": False, "kind": self.kind}
        body["message_id"] = self.message_id
        return ServerSentEvent(data=json.dumps(body), event=EventType.ERROR.value).encode()


async def queued_message(svc: Services, run_id: str, tenant: str) -> QueuedMessage | None:
    """The tenant's queued message that `run_id` waits as (QUEUED, or STARTED before its run
    exists); QueuedGone for one that will never run; None when there is none (404 as before)."""
    if not re.match(ID_PATTERN, run_id):
        return None
    row = await queued_message_of(svc.repo, run_id)
    if row is None or row.tenant != tenant:
        return None
    if row.state in (QueuedState.CANCELLED, QueuedState.FAILED):
        raise QueuedGone(row)
    return row


async def until_opened(
    svc: Services, row: QueuedMessage, open_timeout: float, draining: asyncio.Event
) -> bool:
    """Wait for the queued message's run to start and be opened by a worker; False when the
    server drains first. QueuedGone if the message is withdrawn; the run's own reasons (refused
    at open, no worker in `open_timeout` once started) as RunHandle.opened raises them."""
    run_id = row.run_id
    while row.state == QueuedState.QUEUED:
        try:
            await asyncio.wait_for(draining.wait(), QUEUE_POLL_S)
            return False  # the server drains: the client resumes elsewhere
        except TimeoutError:
            pass
        found = await queued_message_of(svc.repo, run_id)
        if found is None:  # erased with its session
            raise RunNotFound(run_id)
        row = found
    if row.state != QueuedState.STARTED:
        raise QueuedGone(row)
    await RunHandle(svc.temporal, run_id, store=svc.repo).opened(open_timeout)
    return True
