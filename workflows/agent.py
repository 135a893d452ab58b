"""The agent run workflow. The workflow id is the run id.

Conversation text lives in Postgres, not in this workflow's history: the workflow holds ids,
counters and short previews, so history per turn stays the same however long a session grows.
Activities are named by stable strings; renaming one breaks runs in flight.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from agentrun.contracts import (
        ExecuteToolInput,
        ModelTurnInput,
        ModelTurnResult,
        PrepareRunInput,
        RunResult,
        SetStatusInput,
        StartRunInput,
        StartRunSetup,
        ToolCallRequest,
        ToolInfo,
        ToolResult,
        Usage,
    )

WORKFLOW_NAME = "agentrun.AgentRun"

SA_SESSION_ID = SearchAttributeKey.for_keyword("AgentSessionId")
SA_RUN_STATUS = SearchAttributeKey.for_keyword("AgentRunStatus")
SA_MODEL = SearchAttributeKey.for_keyword("AgentModel")
SA_WAITING_APPROVAL = SearchAttributeKey.for_bool("AgentWaitingApproval")

BOOKKEEPING_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
)
BOOKKEEPING_TIMEOUT = timedelta(seconds=30)


def _error_message(err: BaseException) -> str:
    cause = err.__cause__ if isinstance(err, ActivityError) and err.__cause__ else err
    return getattr(cause, "message", None) or str(cause)


@workflow.defn(name=WORKFLOW_NAME)
class AgentRunWorkflow:
    def __init__(self) -> None:
        self._phase = "starting"
        self._status = "QUEUED"
        self._turn = 0
        self._tool_calls_used = 0
        self._usage = Usage()
        self._tools: dict[str, ToolInfo] = {}
        self._model = ""

    @workflow.run
    async def run(self, inp: StartRunInput) -> RunResult:
        await self._prepare(inp)
        try:
            await self._set_status(inp, "RUNNING")
            await self._loop(inp)
            return await self._set_status(inp, "DONE")
        except asyncio.CancelledError:
            # Temporal's own cancel: in-flight activities were cancelled with this task; record
            # the end of the run, then let the workflow close as cancelled.
            await self._set_status(inp, "CANCELED", error="cancelled")
            raise
        except ActivityError as err:
            if isinstance(err.__cause__, CancelledError):
                await self._set_status(inp, "CANCELED", error="cancelled")
                raise
            message = _error_message(err)
            await self._set_status(inp, "FAILED", error=message)
            raise ApplicationError(message, type="RunFailed", non_retryable=True) from err

    async def _loop(self, inp: StartRunInput) -> None:
        config = inp.config
        while True:
            self._turn += 1
            tools_on = (
                bool(self._tools)
                and self._turn < config.max_turns
                and self._tool_calls_used < config.max_tool_calls
            )
            result = await self._model_turn(inp, self._turn, tools_on)
            if not result.tool_calls:
                return
            await self._run_tools(inp, result.tool_calls)

    # -- steps ---------------------------------------------------------------------------

    async def _prepare(self, inp: StartRunInput) -> StartRunSetup:
        workflow.upsert_search_attributes(
            [
                SA_SESSION_ID.value_set(inp.session_id),
                SA_RUN_STATUS.value_set("QUEUED"),
                SA_WAITING_APPROVAL.value_set(False),
            ]
        )
        try:
            setup = await workflow.execute_activity(
                "agentrun.prepare_run",
                PrepareRunInput(
                    run_id=inp.run_id,
                    session_id=inp.session_id,
                    prompt=inp.prompt,
                    config=inp.config,
                ),
                result_type=StartRunSetup,
                start_to_close_timeout=BOOKKEEPING_TIMEOUT,
                retry_policy=BOOKKEEPING_RETRY,
                summary="open run",
            )
        except ActivityError as err:
            # Nothing was written (a busy session, a bad config): fail with the reason.
            raise ApplicationError(
                _error_message(err), type="RunRefused", non_retryable=True
            ) from err
        self._model = setup.model
        self._tools = {t.name: t for t in setup.tools}
        workflow.upsert_search_attributes([SA_MODEL.value_set(setup.model)])
        return setup

    async def _model_turn(self, inp: StartRunInput, turn: int, tools_on: bool) -> ModelTurnResult:
        config = inp.config
        self._phase = "model"
        workflow.set_current_details(f"model turn {turn}: streaming from {self._model}")
        result = await workflow.execute_activity(
            "agentrun.model_turn",
            ModelTurnInput(
                run_id=inp.run_id,
                session_id=inp.session_id,
                turn=turn,
                model=self._model,
                tools=sorted(self._tools) if tools_on else [],
                config=config,
            ),
            result_type=ModelTurnResult,
            start_to_close_timeout=timedelta(seconds=config.model_timeout_s + 30),
            # A little over the client's read timeout, so a stall is caught and recorded by the
            # activity itself; a lost worker is noticed within this.
            heartbeat_timeout=timedelta(seconds=config.model_heartbeat_timeout_s + 2),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=60),
                maximum_attempts=config.model_max_attempts,
            ),
            summary=f"model turn {turn}",
        )
        self._usage = self._usage.add(result.usage)
        return result

    async def _run_tools(self, inp: StartRunInput, calls: list[ToolCallRequest]) -> None:
        self._phase = "tools"
        budget = max(0, inp.config.max_tool_calls - self._tool_calls_used)
        names = ", ".join(c.name for c in calls)
        workflow.set_current_details(f"turn {self._turn}: running {names}")
        tasks = []
        for index, call in enumerate(calls):
            skip = None
            if index >= budget:
                skip = (
                    f"error: not run: the run's limit of {inp.config.max_tool_calls} tool calls "
                    "was reached"
                )
            tasks.append(self._execute_tool(inp, call, skip))
        self._tool_calls_used += min(len(calls), budget)
        results = await asyncio.gather(*tasks)
        self._usage = self._usage.add(Usage(tool_calls=len(results)))

    async def _execute_tool(
        self, inp: StartRunInput, call: ToolCallRequest, skip: str | None
    ) -> ToolResult:
        info = self._tools.get(call.name)
        arg = ExecuteToolInput(
            run_id=inp.run_id,
            session_id=inp.session_id,
            turn=self._turn,
            call=call,
            workspace=inp.config.workspace,
            skip_reason=skip,
        )
        try:
            return await workflow.execute_activity(
                "agentrun.execute_tool",
                arg,
                result_type=ToolResult,
                start_to_close_timeout=timedelta(seconds=(info.timeout_s if info else 60) + 30),
                heartbeat_timeout=timedelta(seconds=inp.config.tool_heartbeat_timeout_s),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    maximum_interval=timedelta(seconds=30),
                    maximum_attempts=info.max_attempts if info else 3,
                ),
                summary=f"tool {call.name}",
            )
        except ActivityError as err:
            if isinstance(err.__cause__, CancelledError):
                raise
            # The tool's own retries are spent: the model gets an error result, the run goes on.
            arg.skip_reason = f"error: {call.name} failed: {_error_message(err)}"
            return await workflow.execute_activity(
                "agentrun.execute_tool",
                arg,
                result_type=ToolResult,
                start_to_close_timeout=BOOKKEEPING_TIMEOUT,
                retry_policy=BOOKKEEPING_RETRY,
                summary=f"record failure of tool {call.name}",
            )

    async def _set_status(
        self, inp: StartRunInput, status: str, error: str | None = None
    ) -> RunResult:
        self._status = status
        self._phase = status.lower()
        workflow.upsert_search_attributes([SA_RUN_STATUS.value_set(status)])
        workflow.set_current_details(
            f"{status.lower()}" + (f": {error}" if error else "") + f" (turn {self._turn})"
        )
        return await workflow.execute_activity(
            "agentrun.set_status",
            SetStatusInput(run_id=inp.run_id, status=status, error=error),
            result_type=RunResult,
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            retry_policy=BOOKKEEPING_RETRY,
            summary=f"status {status}",
        )

    # -- queries ---------------------------------------------------------------------------

    @workflow.query(name="status")
    def status(self) -> dict[str, object]:
        return {
            "status": self._status,
            "phase": self._phase,
            "turn": self._turn,
            "tool_calls_used": self._tool_calls_used,
            "model": self._model,
            "usage": self._usage.model_dump(),
        }
