"""agentrun.SessionQueue: one per session with queued messages (workflow id "queue#<session>"),
started or woken by signal-with-start when a message is queued and when a run of the session
ends. It starts the queued messages' runs one after another, in order, and stops the active run
for a preempting message (interrupt, rollback).

It decides nothing itself: each step is one activity (agentrun.advance_session_queue) whose
decision is made in the database under the session row's lock, the lock that open_run takes to
claim the session (agentrun.store.queue). The workflow only makes sure a step is taken whenever
something may have changed: at a wake signal, and by itself after a while in case a wake was
missed (a worker killed between a run's end and its signal). Its runs are not its children:
they are ordinary runs, so neither this workflow's end nor its continue-as-new touches them.
It ends when nothing waits, and continues as new after many steps to keep its history small.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.sessions import SessionQueueActivities
    from agentrun.contracts.queue import AdvanceInput, QueueStep, SessionQueueInput, StepKind
    from agentrun.protocol.names import SESSION_QUEUE_WAKE_SIGNAL, SESSION_QUEUE_WORKFLOW_NAME
    from workflows.options import BOOKKEEPING_DEADLINE, BOOKKEEPING_RETRY

__all__ = ["SessionQueueWorkflow"]

# How long to wait for a wake before looking again: a started run that no worker opened yet
# is looked at soon (it may have been refused); an active run's end normally wakes the queue.
PENDING_LOOK = timedelta(seconds=2)
ACTIVE_LOOK = timedelta(seconds=30)
STEP_TIMEOUT = timedelta(seconds=10)
# Steps per execution before continue-as-new (each is a few history events).
MAX_STEPS = 500


@workflow.defn(name=SESSION_QUEUE_WORKFLOW_NAME)
class SessionQueueWorkflow:
    def __init__(self) -> None:
        self._wake = False

    @workflow.run
    async def run(self, inp: SessionQueueInput) -> int:
        """Steps taken (by this execution and those it continues); returns when nothing waits."""
        steps = inp.steps
        while True:
            self._wake = False
            try:
                step = await self._advance(inp)
            except ActivityError as err:
                # The database or Temporal stayed unreachable for the step's whole deadline:
                # look again later rather than fail, which would leave the queue unattended.
                workflow.logger.warning("queue step failed: %s", err.cause or err)
                step = QueueStep(kind=StepKind.WAITING)
            steps += 1
            workflow.set_current_details(_details(step))
            if step.kind == StepKind.IDLE and not self._wake:
                return steps
            if step.kind in (StepKind.WAITING, StepKind.CANCELLING):
                look = PENDING_LOOK if step.pending_open else ACTIVE_LOOK
                try:
                    await workflow.wait_condition(lambda: self._wake, timeout=look)
                except TimeoutError:
                    pass
            if steps - inp.steps >= MAX_STEPS or workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(inp.model_copy(update={"steps": steps}))

    async def _advance(self, inp: SessionQueueInput) -> QueueStep:
        return await workflow.execute_activity_method(
            SessionQueueActivities.advance_session_queue,
            AdvanceInput(session_id=inp.session_id, task_queue=inp.task_queue),
            # Short: a step is a few queries and one start or signal, and a worker killed
            # in the middle of one holds the queue up until this runs out.
            start_to_close_timeout=STEP_TIMEOUT,
            schedule_to_close_timeout=BOOKKEEPING_DEADLINE,
            retry_policy=BOOKKEEPING_RETRY,
            summary="next message",
        )

    @workflow.signal(name=SESSION_QUEUE_WAKE_SIGNAL)
    def wake(self) -> None:
        self._wake = True


def _details(step: QueueStep) -> str:
    if step.kind == StepKind.STARTED:
        return f"started run {step.run_id} for message {step.message_id}"
    if step.kind == StepKind.CANCELLING:
        return f"stopping run {step.run_id} for message {step.message_id}"
    if step.kind == StepKind.WAITING:
        return f"message {step.message_id} waits for run {step.run_id}"
    return "nothing waits"
