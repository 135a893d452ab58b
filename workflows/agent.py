"""The agent run workflow, agentrun.AgentRun: its entry point, and what people and apps can send
it (updates, signals) or ask it (the status query), by the names in agentrun.protocol.names.
The workflow id is the run id.

Conversation text lives in Postgres, not in this workflow's history: the workflow holds ids,
counters, short previews and the calls it waits on, so history per turn stays the same however
long a session grows. The run itself is in workflows/loop.py, the steps it schedules in
workflows/steps.py (options in workflows/options.py), the pure rules in workflows/rules.py.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from agentrun.contracts import (
        CancelAnswer,
        CancelRequest,
        RecordedDecision,
        RunResult,
        RunStatusView,
        StartRunInput,
        ToolDecision,
        ToolResultSubmission,
    )
    from agentrun.protocol.names import (
        WORKFLOW_NAME,
        ErrorType,
        Query,
        Signal,
        Update,
    )
    from workflows import steps
    from workflows.loop import AgentLoop
    from workflows.rules import Refusal

__all__ = ["AgentRunWorkflow"]

# Early decisions (signals that arrive before their call exists) kept at most.
MAX_EARLY_DECISIONS = 64


@workflow.defn(name=WORKFLOW_NAME)
class AgentRunWorkflow(AgentLoop):
    @workflow.run
    async def run(self, inp: StartRunInput) -> RunResult:
        return await self._run(inp)

    # -- decisions -------------------------------------------------------------------------

    @workflow.update(name=Update.DECIDE_TOOL_CALL)
    async def decide_tool_call(self, d: ToolDecision) -> RecordedDecision:
        # Checked again here: two updates can pass their validators in one workflow task.
        _raise_refusal(self._book.check_decision(d))
        wait = self._waits[d.tool_call_id]
        wait.decision = d
        await workflow.wait_condition(lambda: wait.recorded is not None or self._finished)
        if wait.recorded is None:
            raise ApplicationError(
                "the run ended before the decision was recorded",
                type=ErrorType.RUN_ENDED,
                non_retryable=True,
            )
        return wait.recorded

    @decide_tool_call.validator
    def _validate_decision(self, d: ToolDecision) -> None:
        _raise_refusal(self._book.check_decision(d))

    @workflow.signal(name=Signal.TOOL_DECISION)
    async def tool_decision(self, d: ToolDecision) -> None:
        call_id = d.tool_call_id
        if self._finished:
            return
        if not self._book.known(call_id):
            # Before the run waits for it: keep it (the first one) until it does, but only so
            # many: anyone who can signal could otherwise grow the workflow's state without end.
            if (
                call_id not in self._early
                and len(self._early) >= MAX_EARLY_DECISIONS
                and workflow.patched(steps.PATCH_EARLY_DECISIONS)
            ):
                workflow.logger.warning(
                    "dropped an early decision for %r: %d are kept already",
                    call_id,
                    MAX_EARLY_DECISIONS,
                )
                return
            self._early.setdefault(call_id, d)
            return
        await self._apply_signal_decision(d)

    @workflow.update(name=Update.SUBMIT_TOOL_RESULT)
    async def submit_tool_result(self, r: ToolResultSubmission) -> str:
        _raise_refusal(self._book.check_result(r, check_size=False))
        self._waits[r.tool_call_id].result = r
        return "accepted"

    @submit_tool_result.validator
    def _validate_result(self, r: ToolResultSubmission) -> None:
        _raise_refusal(self._book.check_result(r, check_size=True))

    # -- cancel ----------------------------------------------------------------------------

    def _request_cancel(self, req: CancelRequest) -> bool:
        if self._finished or self._status.terminal or self._cancel is not None:
            return False
        self._cancel = req
        if self._main is not None and not self._main.done():
            self._main.cancel()
        return True

    @workflow.update(name=Update.CANCEL)
    async def cancel(self, req: CancelRequest) -> CancelAnswer:
        if self._status.terminal or self._finished:
            return CancelAnswer(
                status=self._status,
                message=f"the run already ended ({self._status}); nothing to cancel",
            )
        if not self._request_cancel(req):
            return CancelAnswer(status=self._status, message="a cancel was already requested")
        await workflow.wait_condition(lambda: self._finished)
        if self._refusal is not None:
            return CancelAnswer(
                status=self._status, message=f"the run could not be opened: {self._refusal}"
            )
        return CancelAnswer(status=self._status, message=self._cancel_reason())

    @workflow.signal(name=Signal.CANCEL)
    def cancel_signal(self, req: CancelRequest) -> None:
        self._request_cancel(req)

    # -- queries ---------------------------------------------------------------------------

    @workflow.query(name=Query.STATUS)
    def status(self) -> RunStatusView:
        return RunStatusView(
            run_id=self._run_id,
            status=self._status,
            phase=self._phase,
            turn=self._turn,
            model=self._model,
            pending=[w.pending for w in self._waits.values()],
            usage=self._usage,
            cancel_requested=self._cancel is not None or self._temporal_cancel,
            waiting_on=self._waiting_on_view(),
        )


def _raise_refusal(refusal: Refusal | None) -> None:
    """A refused decision or result: a typed, non-retryable error every client can tell apart
    (the validator's raise rejects the update before anything reaches history)."""
    if refusal is not None:
        raise ApplicationError(refusal.message, type=refusal.type.value, non_retryable=True)
