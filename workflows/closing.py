"""How a run ends when it does not end by itself: refused at open, cancelled (closing the
workflow as Canceled), or leaving a tool batch with calls still open."""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import (
    FailureError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from agentrun.contracts import (
        RunResult,
        RunStatus,
        StartRunInput,
        ToolCallRequest,
        ToolResult,
    )
    from agentrun.protocol.names import (
        MEMO_RESULT,
        SA_RUN_STATUS,
    )
    from workflows import rules, steps
    from workflows.state import TEMPORAL_CANCEL, RunState


class ClosingSteps(RunState):
    async def _refused_closes_canceled(self) -> bool:
        """A run refused at open is FAILED: published as such (the client published QUEUED),
        and its workflow fails even after a Temporal cancel (before the patch: Canceled)."""
        if not workflow.patched(steps.PATCH_REFUSAL_FAILED):
            await self._until_handlers_finished()
            return self._temporal_cancel
        workflow.upsert_search_attributes([SA_RUN_STATUS.value_set(RunStatus.FAILED.value)])
        workflow.set_current_details(f"failed: {self._refusal}")
        await self._until_handlers_finished(despite_cancel=True)
        return False

    async def _end_canceled(self, inp: StartRunInput, err: BaseException) -> RunResult:
        """Record CANCELED, let handlers answer, then close the workflow as Canceled."""
        ours = self._cancel is not None
        error = self._cancel_reason() if ours else TEMPORAL_CANCEL
        result = await self._finish(inp, RunStatus.CANCELED, error=error)
        if not workflow.patched(steps.PATCH_CLOSE_CANCELED):
            # As runs from before the patch closed (their histories replay): a cancel by
            # update or signal completed the workflow with the result, Temporal's canceled it.
            if ours:
                return result
            raise err
        # A workflow closed as Canceled has no result: the memo keeps it for clients.
        workflow.upsert_memo({MEMO_RESULT: result})
        if workflow.cancellation_reason() is None and not await self._request_own_cancel():
            return result
        await self._until_handlers_finished(despite_cancel=True)
        raise asyncio.CancelledError(error)

    async def _request_own_cancel(self) -> bool:
        """Have Temporal cancel this workflow (see agentrun.request_cancel); False if not."""
        try:
            await self._uninterrupted(steps.start_request_cancel(self._run_id))
        except FailureError as exc:
            workflow.logger.warning("the run could not close as Canceled: %s", exc)
            return False
        while workflow.cancellation_reason() is None:
            try:
                await workflow.wait_condition(lambda: workflow.cancellation_reason() is not None)
            except asyncio.CancelledError:
                pass  # the cancel asked for, delivered to this task
        return True

    async def _abandon(
        self,
        inp: StartRunInput,
        calls: list[ToolCallRequest],
        tasks: list[asyncio.Task[ToolResult]],
        err: BaseException,
    ) -> None:
        """The run leaves this batch (cancelled, or failed by one of its calls): stop the calls
        still going (a tool's cancel waits until its process is gone) and give every call
        without a result an error result, so no call stays open behind a closed run."""
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        finished = {
            t.result().tool_call_id for t in tasks if not t.cancelled() and t.exception() is None
        }
        if isinstance(err, asyncio.CancelledError) or is_cancelled_exception(err):
            why = "the run was " + (
                self._cancel_reason() if self._cancel is not None else TEMPORAL_CANCEL
            )
        else:
            why = f"the run failed: {rules.error_message(err)}"
        outcome = rules.abandoned(why)
        await asyncio.gather(
            *(self._record_outcome(inp, c, outcome) for c in calls if c.id not in finished)
        )
