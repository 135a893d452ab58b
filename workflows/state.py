"""A run's state and the steps every part of the run uses: status, finish, the cancel
checks. The run is workflows/loop.py; waits in workflows/waiting.py, the cancelled or
abandoned end in workflows/closing.py."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from agentrun.contracts import (
        CancelRequest,
        OpenedRun,
        RunResult,
        RunStatus,
        StartRunInput,
        ToolCallRequest,
        ToolDecision,
        ToolInfo,
        ToolResult,
        Usage,
    )
    from agentrun.protocol.names import (
        SA_RUN_STATUS,
        SA_WAITING_APPROVAL,
    )
    from workflows import steps
    from workflows.rules import Outcome, Wait, Waits


T = TypeVar("T")


TEMPORAL_CANCEL = "cancelled through Temporal"


class RunState:
    """One agent run's state (the workflow type is AgentRunWorkflow)."""

    def __init__(self) -> None:
        self._run_id = ""
        self._phase = "starting"
        self._status = RunStatus.QUEUED
        self._turn = 0
        self._tool_calls_used = 0
        self._usage = Usage()
        # What the run's sub-runs used (in _usage too): added to the run's own in its result.
        self._subrun_usage = Usage()
        self._tools: dict[str, ToolInfo] = {}
        self._model = ""
        # What the run's open recorded (model, tools, ...): all a continued run needs of it.
        self._opened: OpenedRun | None = None
        self._book = Waits()
        # The book's own dict under the name the steps below use.
        self._waits: dict[str, Wait] = self._book.open
        self._early: dict[str, ToolDecision] = {}
        self._cancel: CancelRequest | None = None
        self._temporal_cancel = False
        self._refusal: str | None = None
        self._main: asyncio.Task[None] | None = None
        self._finished = False

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
        if self._subrun_usage != Usage():
            result.usage = result.usage.add(self._subrun_usage)
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

    async def _record_outcome(
        self, inp: StartRunInput, call: ToolCallRequest, outcome: Outcome
    ) -> ToolResult:
        info = self._tools.get(call.name)
        return await steps.record_outcome(inp, self._turn, call, info, outcome)
