"""What crosses the session queue workflow's boundary (agentrun.SessionQueue): its input, the
step its activity took, and what a sender is told about an accepted message. Ids only: the
message's text stays in PostgreSQL (queued_messages)."""

from __future__ import annotations

import enum

from pydantic import BaseModel, Field

from agentrun.protocol.queue import IfBusy, QueuedState


def queue_workflow_id(session_id: str) -> str:
    """The session's queue workflow: `#` is in no run id (ID_PATTERN), so never a run's id."""
    return f"queue#{session_id}"


class SessionQueueInput(BaseModel):
    """Input of agentrun.SessionQueue (workflow id: queue_workflow_id(session_id))."""

    session_id: str
    # The task queue its runs start on (the queue's own: where its sender started it).
    task_queue: str
    # Steps taken by the executions before this one (continue-as-new carries it).
    steps: int = 0


class StepKind(enum.StrEnum):
    STARTED = "started"  # the next message's run was started
    CANCELLING = "cancelling"  # the active run was asked to stop for a preempting message
    WAITING = "waiting"  # a run is active (or just started): wait for it to end
    IDLE = "idle"  # nothing is queued


class AdvanceInput(BaseModel):
    session_id: str
    task_queue: str


class QueueStep(BaseModel):
    """What agentrun.advance_session_queue did."""

    kind: StepKind
    run_id: str | None = Field(default=None, description="The run started, stopped or awaited.")
    message_id: str | None = None
    # A run was started but has not been opened by a worker yet: look again soon.
    pending_open: bool = False


class Accepted(BaseModel):
    """A message the session took (send_message): its run id is fixed now; the run starts
    when the runs before it have ended (`ahead` of them were waiting or active)."""

    message_id: str
    run_id: str
    session_id: str
    policy: IfBusy
    state: QueuedState
    position: int
    ahead: int = 0
    active_run_id: str | None = Field(
        default=None, description="The run that was active when it came (interrupted ...)."
    )
