"""The run itself, as DESIGN.md's run list says it: open the run, then model turns and their
tool calls (approvals and client results waited for, limits kept, failures and cancels recorded)
until the model answers without tools, then record how it ended.

AgentLoop holds the run's state and steps; workflows/agent.py is the workflow type on top of it,
workflows/steps.py schedules the activities, workflows/rules.py holds the pure rules."""

from __future__ import annotations

import asyncio
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
        Decision,
        ModelTurnResult,
        RunResult,
        RunStatus,
        StartRunInput,
        ToolCallRequest,
        ToolKind,
        ToolResult,
        Usage,
        WaitKind,
    )
    from agentrun.protocol.names import (
        SA_MODEL,
        SA_RUN_STATUS,
        SA_SESSION_ID,
        SA_WAITING_APPROVAL,
        ErrorType,
    )
    from workflows import rules, steps
    from workflows.budgets import BEFORE_MODEL_TURN, BEFORE_TOOL_BATCH, BudgetSteps
    from workflows.carry import CarrySteps
    from workflows.closing import ClosingSteps
    from workflows.rules import Outcome
    from workflows.state import TEMPORAL_CANCEL
    from workflows.subagents import SubAgentSteps
    from workflows.waiting import WaitSteps


T = TypeVar("T")


class AgentLoop(WaitSteps, ClosingSteps, BudgetSteps, CarrySteps, SubAgentSteps):
    """One agent run's loop and steps (the workflow type is AgentRunWorkflow)."""

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
            if inp.carry is None:  # a continued run is running already (workflows/carry.py)
                if inp.config.mcp_servers:  # only such runs schedule it: older histories replay
                    await self._open_mcp_tools(inp)
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

    async def _loop(self, inp: StartRunInput) -> None:
        config = inp.config
        while True:
            self._raise_if_cancelled()
            await self._check_budget(inp, BEFORE_MODEL_TURN)
            await self._continue_if_due(inp)
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
            await self._check_budget(inp, BEFORE_TOOL_BATCH, result.tool_calls)
            await self._run_tools(inp, result.tool_calls)

    async def _open(self, inp: StartRunInput) -> None:
        if inp.carry is None:  # a continued run keeps its search attributes
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
            if inp.carry is not None:
                await self._uninterrupted(self._start_resume(inp))
                opened = inp.carry.opened
            else:
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
        self._opened = opened
        self._model = opened.model
        self._tools = {t.name: t for t in opened.tools}
        if inp.carry is None:
            workflow.upsert_search_attributes([SA_MODEL.value_set(opened.model)])

    async def _open_mcp_tools(self, inp: StartRunInput) -> None:
        """The run's MCP tools as listed and recorded now; kept for the whole run (in
        self._opened, which a continue-as-new carries: a continued run lists nothing again)."""
        opened = self._opened
        assert opened is not None  # set by _open
        mcp = await steps.list_mcp_tools(inp)
        self._opened = opened.model_copy(update={"tools": [*opened.tools, *mcp]})
        self._tools.update({t.name: t for t in mcp})

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
            await self._tell_parent_waits(inp)  # a sub-agent's run: its parent shows them
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
        await self._tell_parent_waits(inp)
        if recorded.decision == Decision.REJECT:
            return await self._record_outcome(inp, call, rules.rejected(recorded))
        return await self._run_tool(inp, call.model_copy(update={"arguments": recorded.arguments}))

    async def _run_tool(self, inp: StartRunInput, call: ToolCallRequest) -> ToolResult:
        info = self._tools.get(call.name)
        if info and info.kind == ToolKind.SUBAGENT and workflow.patched(steps.PATCH_SUBAGENTS):
            return await self._run_subagent(inp, call)  # workflows/subagents.py
        try:
            return await steps.run_tool(inp, self._turn, call, self._tools.get(call.name))
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            # The tool's own retries are spent: the model gets an error result, the run goes on.
            return await self._record_outcome(inp, call, rules.failed(call, err))
