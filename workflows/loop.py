"""The run itself, as DESIGN.md's run list says it: open the run, then model turns and their
tool calls (approvals and client results waited for, limits kept, failures and cancels recorded)
until the model answers without tools, then record how it ended.

AgentLoop holds the run's state and steps; workflows/agent.py is the workflow type on top of it,
workflows/steps.py schedules the activities, workflows/rules.py holds the pure rules."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from agentrun.contracts import (
        CancelRequest,
        Decision,
        ModelTurnResult,
        RecordedDecision,
        RunResult,
        RunStatus,
        StartRunInput,
        ToolCallRequest,
        ToolDecision,
        ToolInfo,
        ToolResult,
        Usage,
        WaitKind,
    )
    from agentrun.protocol.names import (
        MEMO_RESULT,
        SA_MODEL,
        SA_RUN_STATUS,
        SA_SESSION_ID,
        SA_WAITING_APPROVAL,
        ErrorType,
    )
    from workflows import rules, steps
    from workflows.rules import Outcome, Refusal, Wait, Waits

TEMPORAL_CANCEL = "cancelled through Temporal"

T = TypeVar("T")


class AgentLoop:
    """One agent run's state and steps (the workflow type is AgentRunWorkflow)."""

    def __init__(self) -> None:
        self._run_id = ""
        self._phase = "starting"
        self._status = RunStatus.QUEUED
        self._turn = 0
        self._tool_calls_used = 0
        self._usage = Usage()
        self._tools: dict[str, ToolInfo] = {}
        self._model = ""
        self._book = Waits()
        # The book's own dict under the name the steps below use.
        self._waits: dict[str, Wait] = self._book.open
        self._early: dict[str, ToolDecision] = {}
        self._cancel: CancelRequest | None = None
        self._temporal_cancel = False
        self._refusal: str | None = None
        self._main: asyncio.Task[None] | None = None
        self._finished = False

    async def _run(self, inp: StartRunInput) -> RunResult:
        self._run_id = self._book.run_id = inp.run_id
        try:
            await self._open(inp)
        except ApplicationError:
            # Refused: nothing of this run is this execution's to record. A cancel that came
            # meanwhile still gets its answer.
            if await self._refused_closes_canceled():
                raise asyncio.CancelledError(TEMPORAL_CANCEL) from None
            raise
        if self._temporal_cancel:  # Temporal's cancel came while the run was being opened
            return await self._end_canceled(inp, asyncio.CancelledError(TEMPORAL_CANCEL))
        try:
            await self._set_status(inp, RunStatus.RUNNING)
            self._main = asyncio.create_task(self._loop(inp))
            if self._cancel is not None:  # cancelled while the run was being opened
                self._main.cancel()
            await self._main
            return await self._finish(inp, RunStatus.DONE)
        except asyncio.CancelledError as err:
            # Cancelled by our own update or signal, or by Temporal's cancel (Web UI, CLI).
            return await self._end_canceled(inp, err)
        except ActivityError as err:
            if is_cancelled_exception(err):
                # An activity that acknowledged a cancel: ours (update/signal) or Temporal's.
                return await self._end_canceled(inp, err)
            message = rules.error_message(err)
            await self._finish(inp, RunStatus.FAILED, error=message)
            raise ApplicationError(message, type=ErrorType.RUN_FAILED, non_retryable=True) from err
        except ApplicationError as err:
            await self._finish(inp, RunStatus.FAILED, error=err.message)
            raise

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

    async def _loop(self, inp: StartRunInput) -> None:
        config = inp.config
        while True:
            self._raise_if_cancelled()
            self._turn += 1
            tools_on = (
                bool(self._tools)
                and self._turn < config.max_turns
                and self._tool_calls_used < config.max_tool_calls
            )
            result = await self._model_turn(inp, self._turn, tools_on)
            self._raise_if_cancelled()
            if not result.tool_calls:
                return
            await self._run_tools(inp, result.tool_calls)

    # -- steps ---------------------------------------------------------------------------

    async def _open(self, inp: StartRunInput) -> None:
        workflow.upsert_search_attributes(
            [
                SA_SESSION_ID.value_set(inp.session_id),
                SA_RUN_STATUS.value_set(RunStatus.QUEUED.value),
                SA_WAITING_APPROVAL.value_set(False),
            ]
        )
        try:
            # Not interrupted by a cancel: only once the open has finished is it known whether
            # this execution holds the run's row, and so whether CANCELED is ours to record.
            opened = await self._uninterrupted(steps.start_open_run(inp))
        except FailureError as err:
            # Nothing was written (a busy session, a bad config, a run that already ended or
            # belongs to another execution): fail with the reason. A local activity's failure
            # arrives as the activity's own error (or a timeout), not wrapped in ActivityError.
            self._refusal = rules.error_message(err)
            self._status = RunStatus.FAILED
            self._finished = True
            raise ApplicationError(
                self._refusal, type=ErrorType.RUN_REFUSED, non_retryable=True
            ) from err
        self._model = opened.model
        self._tools = {t.name: t for t in opened.tools}
        workflow.upsert_search_attributes([SA_MODEL.value_set(opened.model)])

    async def _uninterrupted(self, step: asyncio.Future[T]) -> T:
        """The result of `step`, which a cancel of the awaiting task does not reach. A Temporal
        cancel that comes meanwhile is remembered in self._temporal_cancel."""
        while True:
            try:
                return await asyncio.shield(step)
            except asyncio.CancelledError:
                if step.done():
                    return step.result()
                if self._cancel is None:
                    self._temporal_cancel = True

    async def _model_turn(self, inp: StartRunInput, turn: int, tools_on: bool) -> ModelTurnResult:
        self._phase = "model"
        workflow.set_current_details(f"model turn {turn}: streaming from {self._model}")
        tools = sorted(self._tools) if tools_on else []
        result = await steps.model_turn(inp, turn, self._model, tools)
        # Tool calls count when the model asks for them, as the record counts them.
        self._usage = self._usage.add(result.usage).add(Usage(tool_calls=len(result.tool_calls)))
        return result

    async def _run_tools(self, inp: StartRunInput, calls: list[ToolCallRequest]) -> None:
        self._phase = "tools"
        workflow.set_current_details(
            f"turn {self._turn}: running {', '.join(c.name for c in calls)}"
        )
        plan, self._tool_calls_used = rules.plan_batch(
            calls, self._tools, inp.config.max_tool_calls, self._tool_calls_used
        )
        tasks: list[asyncio.Task[ToolResult]] = []
        try:
            await self._request_waits(
                inp, [c for c, skip in zip(calls, plan, strict=True) if skip is None]
            )
            self._raise_if_cancelled()
            tasks = [
                asyncio.create_task(self._handle_call(inp, c, skip))
                for c, skip in zip(calls, plan, strict=True)
            ]
            await asyncio.gather(*tasks)
        except GeneratorExit:  # evicted from the worker's cache: no workflow calls any more
            raise
        except BaseException as err:
            if workflow.patched(steps.PATCH_ABANDON_BATCH):
                await self._uninterrupted(
                    asyncio.create_task(self._abandon(inp, calls, tasks, err))
                )
            raise

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

    async def _request_waits(self, inp: StartRunInput, calls: list[ToolCallRequest]) -> None:
        pending = []
        for call in calls:
            kind = rules.wait_kind(self._tools.get(call.name))
            if kind is None:
                continue
            p = rules.pending_call(call, kind, self._turn)
            # Known before the request is written, so a decision sent the moment an app sees
            # tool.approval_requested always validates.
            self._book.add(Wait(p, self._tools.get(call.name)))
            pending.append(p)
        if not pending:
            return
        for p in pending:
            early = self._early.pop(p.tool_call_id, None)
            if early is not None:
                await self._apply_signal_decision(early, early=True)
        await steps.request_waits(inp.run_id, pending)
        self._show_waits()

    def _show_waits(self) -> None:
        waiting = bool(self._book.of_kind(WaitKind.APPROVAL))
        if waiting and self._status != RunStatus.WAITING_APPROVAL:
            self._status = RunStatus.WAITING_APPROVAL
            workflow.upsert_search_attributes(
                [SA_RUN_STATUS.value_set(self._status.value), SA_WAITING_APPROVAL.value_set(True)]
            )
        details = rules.waits_details(self._waits.values())
        if details:
            self._phase = "waiting"
            workflow.set_current_details(details)

    async def _handle_call(
        self, inp: StartRunInput, call: ToolCallRequest, skip: Outcome | None
    ) -> ToolResult:
        if skip is not None:
            return await self._record_outcome(inp, call, skip)
        wait = self._waits.get(call.id)
        if wait is None:
            return await self._run_tool(inp, call)
        if wait.pending.kind == WaitKind.CLIENT_RESULT:
            submitted = await self._await_wait(inp, wait, lambda: wait.result is not None)
            self._book.settle(wait, "result submitted" if submitted else "timed out")
            outcome = rules.client_result(wait.result, inp.config.approval_timeout_s)
            return await self._record_outcome(inp, call, outcome)
        recorded = await self._decision(inp, call, wait)
        if recorded.decision == Decision.REJECT:
            return await self._record_outcome(inp, call, rules.rejected(recorded))
        return await self._run_tool(inp, call.model_copy(update={"arguments": recorded.arguments}))

    async def _decision(
        self, inp: StartRunInput, call: ToolCallRequest, wait: Wait
    ) -> RecordedDecision:
        """The call's decision, once made (or timed out) and recorded."""
        decided = await self._await_wait(inp, wait, lambda: wait.decision is not None)
        decision = (wait.decision if decided else None) or rules.timeout_rejection(call.id)
        wait.recorded = await steps.record_decision(
            inp.run_id,
            RecordedDecision(
                tool_call_id=call.id,
                name=call.name,
                decision=decision.decision,
                arguments=rules.decided_arguments(decision, call),
                decided_by=decision.decided_by or "unknown",
                reason=decision.reason,
            ),
        )
        self._book.settle(wait, f"{wait.recorded.decision} by {wait.recorded.decided_by}")
        await self._leave_waiting_if_clear(inp)
        return wait.recorded

    async def _await_wait(self, inp: StartRunInput, wait: Wait, done: Callable[[], bool]) -> bool:
        """Wait (durable timer) for a decision or result; False on timeout with 'reject'."""
        timeout = inp.config.approval_timeout_s
        try:
            await workflow.wait_condition(
                lambda: done() or self._cancel is not None,
                timeout=timeout,
            )
            self._raise_if_cancelled()
            return True
        except TimeoutError:
            if inp.config.approval_timeout_action == "fail":
                what = "approval" if wait.pending.kind == WaitKind.APPROVAL else "client result"
                raise ApplicationError(
                    f"{what} of {wait.pending.name} ({wait.pending.tool_call_id}) timed out "
                    f"after {timeout:g}s",
                    type=ErrorType.APPROVAL_TIMEOUT,
                    non_retryable=True,
                ) from None
            return False

    async def _leave_waiting_if_clear(self, inp: StartRunInput) -> None:
        if self._status != RunStatus.WAITING_APPROVAL:
            return
        if self._book.of_kind(WaitKind.APPROVAL):
            self._show_waits()
            return
        workflow.upsert_search_attributes([SA_WAITING_APPROVAL.value_set(False)])
        await self._set_status(inp, RunStatus.RUNNING)
        self._phase = "tools"

    async def _run_tool(self, inp: StartRunInput, call: ToolCallRequest) -> ToolResult:
        try:
            return await steps.run_tool(inp, self._turn, call, self._tools.get(call.name))
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            # The tool's own retries are spent: the model gets an error result, the run goes on.
            return await self._record_outcome(inp, call, rules.failed(call, err))

    async def _record_outcome(
        self, inp: StartRunInput, call: ToolCallRequest, outcome: Outcome
    ) -> ToolResult:
        info = self._tools.get(call.name)
        return await steps.record_outcome(inp, self._turn, call, info, outcome)

    async def _set_status(
        self, inp: StartRunInput, status: RunStatus, error: str | None = None
    ) -> RunResult:
        self._status = status
        self._phase = status.lower()
        workflow.upsert_search_attributes([SA_RUN_STATUS.value_set(status.value)])
        workflow.set_current_details(
            f"{status.lower()}" + (f": {error}" if error else "") + f" (turn {self._turn})"
        )
        return await steps.set_status(inp.run_id, status, error)

    async def _finish(
        self, inp: StartRunInput, status: RunStatus, error: str | None = None
    ) -> RunResult:
        if self._waits:
            workflow.upsert_search_attributes([SA_WAITING_APPROVAL.value_set(False)])
        result = await self._set_status(inp, status, error)
        self._finished = True
        await self._until_handlers_finished()
        return result

    async def _until_handlers_finished(self, *, despite_cancel: bool = False) -> None:
        # Let update handlers that wait on this run answer before the workflow closes: an
        # update still running when the workflow closes never gets its answer.
        while True:
            try:
                await workflow.wait_condition(workflow.all_handlers_finished)
                return
            except asyncio.CancelledError:
                # Temporal's cancel: it decides nothing once the run's end is recorded.
                if not despite_cancel:
                    raise

    def _raise_if_cancelled(self) -> None:
        # Task.cancel() alone is not enough: when the cancel lands with the result the main
        # task awaits, the SDK hands over the result and drops the cancel. Every step
        # therefore also checks the request itself, Temporal's too.
        if self._cancel is not None:
            raise asyncio.CancelledError(self._cancel_reason())
        if workflow.cancellation_reason() is not None and workflow.patched(steps.PATCH_KEEP_CANCEL):
            raise asyncio.CancelledError(TEMPORAL_CANCEL)

    def _cancel_reason(self) -> str:
        req = self._cancel or CancelRequest()
        by = f" by {req.requested_by}" if req.requested_by else ""
        return f"cancelled{by}" + (f": {req.reason}" if req.reason else "")

    async def _apply_signal_decision(self, d: ToolDecision, *, early: bool = False) -> None:
        refusal: Refusal | None = self._book.check_decision(d)
        if (
            refusal is None
            and early
            and rules.early_approval_refusal(d) is not None
            and workflow.patched(steps.PATCH_EARLY_DECISIONS)
        ):
            refusal = rules.early_approval_refusal(d)
        if refusal is None:
            self._waits[d.tool_call_id].decision = d
            return
        if refusal.type == ErrorType.ALREADY_DECIDED:
            return  # a duplicate: ignored
        await steps.record_invalid_decision(self._run_id, d, refusal)
