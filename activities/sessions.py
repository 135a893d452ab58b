"""The session queue's activity, and the few calls other activities make into the queue.

agentrun.advance_session_queue takes one step of a session's queue (agentrun.store.queue
decides it under the session's lock): start the next message's run, ask the active run to stop
for a preempting message, or say there is nothing to do but wait. Starting a run is an ordinary
start of agentrun.AgentRun under the run id the message was given when it was accepted, so a
step repeated after a crash finds the run already there.
"""

from __future__ import annotations

import contextlib
import logging

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from agentrun.contracts import AgentConfig, CancelRequest, ModelTurnInput
from agentrun.contracts.queue import (
    AdvanceInput,
    QueueStep,
    SessionQueueInput,
    StepKind,
    queue_workflow_id,
)
from agentrun.db.models import QueuedMessage
from agentrun.protocol.names import (
    SESSION_QUEUE_WAKE_SIGNAL,
    SESSION_QUEUE_WORKFLOW_NAME,
    Activity,
    Signal,
)
from agentrun.protocol.queue import IfBusy
from agentrun.run_liveness import workflow_status
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.store import queue as store

log = logging.getLogger(__name__)

# Who asks a run to stop for a newer message (recorded as the cancel's requested_by).
QUEUE_REQUESTER = "session queue"


class SessionQueueActivities:
    def __init__(self, repo: Repository, settings: Settings) -> None:
        self.repo = repo
        self.settings = settings

    @activity.defn(name=Activity.ADVANCE_SESSION_QUEUE)
    async def advance_session_queue(self, inp: AdvanceInput) -> QueueStep:
        client = activity.client()
        waiting = await self._check_pending(client, inp)
        if waiting is not None:
            return waiting
        async with self.repo.transaction() as db:
            step = await store.next_step(db, inp.session_id)
        if step.kind == "idle":
            return QueueStep(kind=StepKind.IDLE)
        message = step.message
        assert message is not None
        if step.kind == "start":
            await self._start(client, message, inp.task_queue)
            return QueueStep(kind=StepKind.STARTED, run_id=message.run_id, message_id=message.id)
        if step.kind == "cancel":
            assert step.active_run_id is not None
            await _ask_to_stop(client, step.active_run_id, message)
            return QueueStep(
                kind=StepKind.CANCELLING, run_id=step.active_run_id, message_id=message.id
            )
        return QueueStep(kind=StepKind.WAITING, run_id=step.active_run_id, message_id=message.id)

    async def _check_pending(self, client: Client, inp: AdvanceInput) -> QueueStep | None:
        """A run the queue started that no worker opened yet holds the session until it opens
        (wait), was never started (a step cut short: start it now), or ended without opening
        (its message failed: go on)."""
        async with self.repo.session() as db:
            pending = await store.pending_open(db, inp.session_id)
        for row in pending:
            status = await workflow_status(client, row.run_id)
            if status is None:
                await self._start(client, row, inp.task_queue)
            if status is None or status == WorkflowExecutionStatus.RUNNING:
                return QueueStep(
                    kind=StepKind.WAITING, run_id=row.run_id, message_id=row.id, pending_open=True
                )
            async with self.repo.transaction() as db:
                await store.mark_failed(
                    db, row.run_id, f"its run ended before a worker opened it ({status.name})"
                )
        return None

    async def _start(self, client: Client, row: QueuedMessage, task_queue: str) -> None:
        from agentrun.client.calls import start_run  # imports the workflows, which import us
        from agentrun.client.errors import RunEnded

        known = {k: v for k, v in (row.config or {}).items() if k in AgentConfig.model_fields}
        try:
            await start_run(
                client,
                task_queue,
                row.prompt,
                session_id=row.session_id,
                run_id=row.run_id,
                config=AgentConfig.model_validate(known),
                tenant=row.tenant,
            )
        except RunEnded as exc:
            async with self.repo.transaction() as db:
                await store.mark_failed(db, row.run_id, str(exc))


async def _ask_to_stop(client: Client, run_id: str, by: QueuedMessage) -> None:
    """The cancel signal (the run records who and why; a second one changes nothing)."""
    how = "rolled back" if by.policy == IfBusy.ROLLBACK else "interrupted"
    req = CancelRequest(
        reason=f"{how} by a newer message ({by.id}, run {by.run_id})",
        requested_by=QUEUE_REQUESTER,
    )
    try:
        await client.get_workflow_handle(run_id).signal(Signal.CANCEL, req)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        log.warning("run %s to stop for message %s is gone", run_id, by.id)


async def wake_queue(client: Client, session_id: str, task_queue: str) -> None:
    """Signal the session's queue workflow, starting it when none runs (signal-with-start)."""
    await client.start_workflow(
        SESSION_QUEUE_WORKFLOW_NAME,
        SessionQueueInput(session_id=session_id, task_queue=task_queue),
        id=queue_workflow_id(session_id),
        task_queue=task_queue,
        start_signal=SESSION_QUEUE_WAKE_SIGNAL,
        static_summary=f"message queue of session {session_id}",
    )


async def wake_if_waiting(repo: Repository, session_id: str) -> None:
    """From an activity of a run that ended or was refused: messages wait, so wake their
    queue now rather than at its next look. Best effort: the queue looks again by itself."""
    try:
        async with repo.session() as db:
            if not await store.has_waiting(db, session_id):
                return
        await wake_queue(activity.client(), session_id, activity.info().task_queue)
    except Exception as exc:  # the queue's own poll covers a missed wake
        log.warning("could not wake the queue of session %s: %s", session_id, exc)


async def open_refused(repo: Repository, run_id: str, session_id: str, reason: str) -> None:
    """A run's open was refused: if the queue started it, its message failed; go on."""
    with contextlib.suppress(Exception):
        async with repo.transaction() as db:
            await store.mark_failed(db, run_id, f"its run was refused: {reason}")
    await wake_if_waiting(repo, session_id)


async def keep_interrupted(repo: Repository, inp: ModelTurnInput, text: str) -> None:
    """The model-turn activity was cancelled with the run: if a newer message interrupted it,
    keep what streamed of the answer in the conversation, marked interrupted (the newer
    message's run sees it; store.record_interrupted decides)."""
    details = activity.cancellation_details()
    if not text.strip() or (details is not None and not details.cancel_requested):
        return  # nothing streamed, or not the run's cancel (a timeout: the turn is retried)
    async with repo.transaction() as db:
        await store.record_interrupted(
            db, run_id=inp.run_id, session_id=inp.session_id, turn=inp.turn, text=text
        )
