"""The agent run workflow. The workflow id is the run id.

Conversation text lives in Postgres, not in this workflow's history: the workflow holds ids,
counters, short previews and the calls it waits on, so history per turn stays the same however
long a session grows. Activities are named by stable strings; renaming one breaks runs in flight.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    is_cancelled_exception,
)
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from agentrun.contracts import (
        AppendEventInput,
        CancelAnswer,
        CancelRequest,
        ExecuteToolInput,
        ModelTurnInput,
        ModelTurnResult,
        PendingCall,
        PrepareRunInput,
        RecordDecisionInput,
        RecordedDecision,
        RequestWaitInput,
        RunResult,
        RunStatusView,
        SetStatusInput,
        StartRunInput,
        StartRunSetup,
        ToolCallRequest,
        ToolDecision,
        ToolInfo,
        ToolResult,
        ToolResultSubmission,
        Usage,
    )
    from agentrun.protocol.events import EventType
    from agentrun.protocol.names import (
        SA_MODEL,
        SA_RUN_STATUS,
        SA_SESSION_ID,
        SA_WAITING_APPROVAL,
        WORKFLOW_NAME,
        ErrorType,
    )
    from workflows.rules import (
        Refusal,
        Wait,
        Waits,
        arguments_sha256,
        early_approval_refusal,
        result_text,
    )

__all__ = [
    "SA_MODEL",
    "SA_RUN_STATUS",
    "SA_SESSION_ID",
    "SA_WAITING_APPROVAL",
    "WORKFLOW_NAME",
    "AgentRunWorkflow",
    "arguments_sha256",
]

# Errors no retry can fix: a value the database refuses to store (SQLAlchemy and psycopg both
# name theirs DataError) fails the step at once instead of retrying it until its deadline.
DATA_ERROR_TYPES = ["DataError"]

# Bookkeeping (open the run, move its status, record a decision) runs as local activities:
# short idempotent database writes that need no task-queue round trip of their own. The
# deadline rides out a database outage of several minutes but never retries forever; the
# maximum interval stays under the SDK's local retry threshold (1 minute), above which a
# local activity's backoff becomes a timer in history.
BOOKKEEPING_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=DATA_ERROR_TYPES,
)
BOOKKEEPING_TIMEOUT = timedelta(seconds=30)
BOOKKEEPING_DEADLINE = timedelta(minutes=10)
# The options of every bookkeeping step, local or not: one place to change them.
BOOKKEEPING: dict[str, Any] = {
    "start_to_close_timeout": BOOKKEEPING_TIMEOUT,
    "schedule_to_close_timeout": BOOKKEEPING_DEADLINE,
    "retry_policy": BOOKKEEPING_RETRY,
}
TOOL_INFRA_RETRY_S = 600
MODEL_INFRA_RETRY_S = 900
TERMINAL = ("DONE", "FAILED", "CANCELED")
# Early decisions (signals that arrive before their call exists) kept at most.
MAX_EARLY_DECISIONS = 64

# workflow.patched ids: each guards a change of the commands a run issues, so that histories
# recorded before it (tests/histories/) still replay. Never rename or reuse one.
PATCH_ABANDON_BATCH = "abandoned-tool-calls-are-cancelled-and-recorded"
PATCH_EARLY_DECISIONS = "early-decisions-need-arguments-sha256"

T = TypeVar("T")


def _error_message(err: BaseException) -> str:
    cause = err.__cause__ if isinstance(err, ActivityError) and err.__cause__ else err
    return getattr(cause, "message", None) or str(cause)


def _describe(call: ToolCallRequest) -> str:
    """`bash \\`ls -la\\`` for a shell command, `name {args}` for the rest, kept short."""
    try:
        args = json.loads(call.arguments or "{}")
    except ValueError:
        args = None
    if call.name == "bash" and isinstance(args, dict) and isinstance(args.get("command"), str):
        text = f"bash `{args['command']}`"
    else:
        text = f"{call.name} {call.arguments}"
    return text if len(text) <= 200 else text[:197] + "..."


@workflow.defn(name=WORKFLOW_NAME)
class AgentRunWorkflow:
    def __init__(self) -> None:
        self._run_id = ""
        self._phase = "starting"
        self._status = "QUEUED"
        self._turn = 0
        self._tool_calls_used = 0
        self._usage = Usage()
        self._tools: dict[str, ToolInfo] = {}
        self._model = ""
        self._book = Waits()
        # The book's own dicts under the names the steps below use.
        self._waits: dict[str, Wait] = self._book.open
        self._settled: dict[str, str] = self._book.settled
        self._early: dict[str, ToolDecision] = {}
        self._cancel: CancelRequest | None = None
        self._temporal_cancel = False
        self._refusal: str | None = None
        self._main: asyncio.Task[None] | None = None
        self._finished = False

    @workflow.run
    async def run(self, inp: StartRunInput) -> RunResult:
        self._run_id = self._book.run_id = inp.run_id
        try:
            await self._prepare(inp)
        except ApplicationError:
            # Refused: nothing of this run is this execution's to record. A cancel that came
            # meanwhile still gets its answer, and a Temporal cancel still closes as cancelled.
            await self._until_handlers_finished()
            if self._temporal_cancel:
                raise asyncio.CancelledError("cancelled through Temporal") from None
            raise
        if self._temporal_cancel:  # Temporal's cancel came while the run was being opened
            await self._finish(inp, "CANCELED", error="cancelled through Temporal")
            raise asyncio.CancelledError("cancelled through Temporal")
        try:
            await self._set_status(inp, "RUNNING")
            self._main = asyncio.create_task(self._loop(inp))
            if self._cancel is not None:  # cancelled while the run was being opened
                self._main.cancel()
            await self._main
            return await self._finish(inp, "DONE")
        except asyncio.CancelledError:
            if self._cancel is not None:
                # Cancelled by our own update or signal: the run ends CANCELED, the workflow
                # completes with that result.
                return await self._finish(inp, "CANCELED", error=self._cancel_reason())
            # Temporal's own cancel (Web UI, CLI): record it, then close as cancelled.
            await self._finish(inp, "CANCELED", error="cancelled through Temporal")
            raise
        except ActivityError as err:
            if is_cancelled_exception(err):
                # An activity that acknowledged a cancel: ours (update/signal) or Temporal's.
                if self._cancel is not None:
                    return await self._finish(inp, "CANCELED", error=self._cancel_reason())
                await self._finish(inp, "CANCELED", error="cancelled through Temporal")
                raise
            message = _error_message(err)
            await self._finish(inp, "FAILED", error=message)
            raise ApplicationError(message, type="RunFailed", non_retryable=True) from err
        except ApplicationError as err:
            await self._finish(inp, "FAILED", error=err.message)
            raise

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

    async def _prepare(self, inp: StartRunInput) -> StartRunSetup:
        workflow.upsert_search_attributes(
            [
                SA_SESSION_ID.value_set(inp.session_id),
                SA_RUN_STATUS.value_set("QUEUED"),
                SA_WAITING_APPROVAL.value_set(False),
            ]
        )
        opening = workflow.start_local_activity(
            "agentrun.prepare_run",
            PrepareRunInput(
                run_id=inp.run_id,
                session_id=inp.session_id,
                prompt=inp.prompt,
                config=inp.config,
            ),
            result_type=StartRunSetup,
            **BOOKKEEPING,
            summary="open run",
        )
        try:
            # Not interrupted by a cancel: only once the open has finished is it known whether
            # this execution holds the run's row, and so whether CANCELED is ours to record.
            setup = await self._uninterrupted(opening)
        except FailureError as err:
            # Nothing was written (a busy session, a bad config, a run that already ended or
            # belongs to another execution): fail with the reason. A local activity's failure
            # arrives as the activity's own error (or a timeout), not wrapped in ActivityError.
            self._refusal = _error_message(err)
            self._status = "FAILED"
            self._finished = True
            raise ApplicationError(self._refusal, type="RunRefused", non_retryable=True) from err
        self._model = setup.model
        self._tools = {t.name: t for t in setup.tools}
        workflow.upsert_search_attributes([SA_MODEL.value_set(setup.model)])
        return setup

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
        config = inp.config
        self._phase = "model"
        workflow.set_current_details(f"model turn {turn}: streaming from {self._model}")
        result = await workflow.execute_activity(
            "agentrun.model_turn",
            # Ids only: the activity reads the config from the run's row, so history per turn
            # does not grow with the system prompt or the tools.
            ModelTurnInput(
                run_id=inp.run_id,
                session_id=inp.session_id,
                turn=turn,
                model=self._model,
                tools=sorted(self._tools) if tools_on else [],
            ),
            result_type=ModelTurnResult,
            start_to_close_timeout=timedelta(seconds=config.model_timeout_s + 30),
            # The activity heartbeats every second from a background task and times stalls
            # itself; this catches a lost worker.
            heartbeat_timeout=timedelta(seconds=config.model_heartbeat_timeout_s + 2),
            # The model budget (model_max_attempts) is counted by the activity in llm_calls, so
            # attempts that failed on the database do not spend it; time bounds the rest.
            schedule_to_close_timeout=timedelta(
                seconds=(config.model_timeout_s + 90) * config.model_max_attempts
                + MODEL_INFRA_RETRY_S
            ),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=60),
            ),
            # A cancel waits for the activity to stop (its heartbeat carries the cancel), so
            # no stream outlives its run and the partial text is in the event log first.
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=f"model turn {turn}",
        )
        self._usage = self._usage.add(result.usage)
        return result

    async def _run_tools(self, inp: StartRunInput, calls: list[ToolCallRequest]) -> None:
        self._phase = "tools"
        workflow.set_current_details(
            f"turn {self._turn}: running {', '.join(c.name for c in calls)}"
        )
        skips = self._skip_reasons(inp, calls)
        tasks: list[asyncio.Task[ToolResult]] = []
        try:
            await self._request_waits(
                inp, [c for c, s in zip(calls, skips, strict=True) if s is None]
            )
            self._raise_if_cancelled()
            tasks = [
                asyncio.create_task(self._handle_call(inp, c, s))
                for c, s in zip(calls, skips, strict=True)
            ]
            results = await asyncio.gather(*tasks)
        except BaseException as err:
            if workflow.patched(PATCH_ABANDON_BATCH):
                await self._uninterrupted(
                    asyncio.create_task(self._abandon(inp, calls, tasks, err))
                )
            raise
        self._usage = self._usage.add(Usage(tool_calls=len(results)))

    def _skip_reasons(self, inp: StartRunInput, calls: list[ToolCallRequest]) -> list[str | None]:
        """For each call, why it is not run (an error result instead), or None to run it. A
        tool the run did not enable is never run nor offered for approval, whatever the model
        asks: its name may come from a prompt injection."""
        budget = max(0, inp.config.max_tool_calls - self._tool_calls_used)
        enabled = ", ".join(sorted(self._tools)) or "none"
        skips: list[str | None] = []
        for call in calls:
            if call.name not in self._tools:
                skips.append(
                    f"error: tool {call.name!r} is not enabled for this run; "
                    f"enabled tools: {enabled}"
                )
            elif budget > 0:
                skips.append(None)
                budget -= 1
                self._tool_calls_used += 1
            else:
                skips.append(
                    f"error: not run: the run's limit of {inp.config.max_tool_calls} tool calls "
                    "was reached"
                )
        return skips

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
                self._cancel_reason() if self._cancel is not None else "cancelled through Temporal"
            )
        else:
            why = f"the run failed: {_error_message(err)}"
        await asyncio.gather(
            *(
                self._execute_tool(inp, c, skip=f"cancelled: {why}")
                for c in calls
                if c.id not in finished
            )
        )

    def _wait_kind(self, call: ToolCallRequest) -> str | None:
        info = self._tools.get(call.name)
        if info is None:
            return None
        if info.kind == "client":
            return "client_result"
        return "approval" if info.approval == "needs_approval" else None

    async def _request_waits(self, inp: StartRunInput, calls: list[ToolCallRequest]) -> None:
        pending = []
        for call in calls:
            kind = self._wait_kind(call)
            if kind is None:
                continue
            p = PendingCall(
                tool_call_id=call.id,
                name=call.name,
                kind=kind,  # type: ignore[arg-type]
                arguments=call.arguments,
                arguments_sha256=arguments_sha256(call.arguments),
                turn=self._turn,
            )
            # Known before the request is written, so a decision sent the moment an app sees
            # tool.approval_requested always validates.
            self._waits[call.id] = Wait(p, self._tools.get(call.name))
            pending.append(p)
        if not pending:
            return
        for p in pending:
            early = self._early.pop(p.tool_call_id, None)
            if early is not None:
                await self._apply_signal_decision(early, early=True)
        await workflow.execute_local_activity(
            "agentrun.request_waits",
            RequestWaitInput(run_id=inp.run_id, calls=pending),
            result_type=bool,
            **BOOKKEEPING,
            summary="request approval"
            if any(p.kind == "approval" for p in pending)
            else "request client result",
        )
        self._show_waits()

    def _show_waits(self) -> None:
        approvals = [w for w in self._waits.values() if w.pending.kind == "approval"]
        results = [w for w in self._waits.values() if w.pending.kind == "client_result"]
        waiting = bool(approvals)
        if waiting and self._status != "WAITING_APPROVAL":
            self._status = "WAITING_APPROVAL"
            workflow.upsert_search_attributes(
                [SA_RUN_STATUS.value_set(self._status), SA_WAITING_APPROVAL.value_set(True)]
            )
        parts = [
            "waiting for approval: " + _describe(self._as_request(w.pending)) for w in approvals
        ] + [
            "waiting for client result: " + _describe(self._as_request(w.pending)) for w in results
        ]
        if parts:
            self._phase = "waiting"
            workflow.set_current_details("\n".join(parts))

    @staticmethod
    def _as_request(p: PendingCall) -> ToolCallRequest:
        return ToolCallRequest(id=p.tool_call_id, name=p.name, arguments=p.arguments)

    async def _handle_call(
        self, inp: StartRunInput, call: ToolCallRequest, skip: str | None
    ) -> ToolResult:
        if skip is not None:
            return await self._execute_tool(inp, call, skip=skip)
        wait = self._waits.get(call.id)
        if wait is None:
            return await self._execute_tool(inp, call)
        if wait.pending.kind == "client_result":
            submission = await self._await_wait(inp, wait, lambda: wait.result is not None)
            self._settle(wait, "result submitted" if submission else "timed out")
            if wait.result is None:
                return await self._execute_tool(
                    inp,
                    call,
                    skip=f"error: no result from the client within "
                    f"{inp.config.approval_timeout_s:g}s",
                )
            return await self._execute_tool(
                inp,
                call,
                given=result_text(wait.result),
                given_is_error=wait.result.is_error,
            )
        decided = await self._await_wait(inp, wait, lambda: wait.decision is not None)
        decision = wait.decision if decided else None
        if decision is None:
            decision = ToolDecision(
                tool_call_id=call.id,
                decision="reject",
                decided_by="timeout",
                reason="approval timed out",
            )
        arguments = (
            json.dumps(decision.arguments, ensure_ascii=False)
            if decision.decision == "approve_with_edits" and decision.arguments is not None
            else call.arguments
        )
        wait.recorded = await workflow.execute_local_activity(
            "agentrun.record_decision",
            RecordDecisionInput(
                run_id=inp.run_id,
                decision=RecordedDecision(
                    tool_call_id=call.id,
                    name=call.name,
                    decision=decision.decision,
                    arguments=arguments,
                    decided_by=decision.decided_by or "unknown",
                    reason=decision.reason,
                ),
            ),
            result_type=RecordedDecision,
            **BOOKKEEPING,
            summary=f"decision {decision.decision} {call.name}",
        )
        self._settle(wait, f"{wait.recorded.decision} by {wait.recorded.decided_by}")
        await self._leave_waiting_if_clear(inp)
        if wait.recorded.decision == "reject":
            reason = f": {wait.recorded.reason}" if wait.recorded.reason else ""
            return await self._execute_tool(
                inp,
                call,
                skip=f"error: the call was rejected by {wait.recorded.decided_by}{reason}",
            )
        return await self._execute_tool(
            inp, call.model_copy(update={"arguments": wait.recorded.arguments})
        )

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
                what = "approval" if wait.pending.kind == "approval" else "client result"
                raise ApplicationError(
                    f"{what} of {wait.pending.name} ({wait.pending.tool_call_id}) timed out "
                    f"after {timeout:g}s",
                    type="ApprovalTimeout",
                    non_retryable=True,
                ) from None
            return False

    def _settle(self, wait: Wait, how: str) -> None:
        self._book.settle(wait, how)

    async def _leave_waiting_if_clear(self, inp: StartRunInput) -> None:
        if self._status != "WAITING_APPROVAL":
            return
        if any(w.pending.kind == "approval" for w in self._waits.values()):
            self._show_waits()
            return
        workflow.upsert_search_attributes([SA_WAITING_APPROVAL.value_set(False)])
        await self._set_status(inp, "RUNNING")
        self._phase = "tools"

    async def _execute_tool(
        self,
        inp: StartRunInput,
        call: ToolCallRequest,
        *,
        skip: str | None = None,
        given: str | None = None,
        given_is_error: bool = False,
    ) -> ToolResult:
        info = self._tools.get(call.name)
        arg = ExecuteToolInput(
            run_id=inp.run_id,
            session_id=inp.session_id,
            turn=self._turn,
            call=call,
            workspace=inp.config.workspace,
            skip_reason=skip,
            given_result=given,
            given_is_error=given_is_error,
        )
        try:
            return await workflow.execute_activity(
                "agentrun.execute_tool",
                arg,
                result_type=ToolResult,
                start_to_close_timeout=timedelta(seconds=(info.timeout_s if info else 60) + 30),
                # The tool's own retries are counted by the activity (tool_calls.attempts); the
                # activity itself retries through lost workers and database outages, bounded
                # by time.
                schedule_to_close_timeout=timedelta(
                    seconds=((info.timeout_s if info else 60) + 30)
                    * (info.max_attempts if info else 3)
                    + TOOL_INFRA_RETRY_S
                ),
                heartbeat_timeout=timedelta(seconds=inp.config.tool_heartbeat_timeout_s),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    maximum_interval=timedelta(seconds=10),
                    non_retryable_error_types=DATA_ERROR_TYPES,
                ),
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                summary=f"tool {call.name}",
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            # The tool's own retries are spent: the model gets an error result, the run goes on.
            arg.skip_reason = f"error: {call.name} failed: {_error_message(err)}"
            return await workflow.execute_activity(
                "agentrun.execute_tool",
                arg,
                result_type=ToolResult,
                **BOOKKEEPING,
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
        return await workflow.execute_local_activity(
            "agentrun.set_status",
            SetStatusInput(run_id=inp.run_id, status=status, error=error),
            result_type=RunResult,
            **BOOKKEEPING,
            summary=f"status {status}",
        )

    async def _finish(self, inp: StartRunInput, status: str, error: str | None = None) -> RunResult:
        if self._waits:
            workflow.upsert_search_attributes([SA_WAITING_APPROVAL.value_set(False)])
        result = await self._set_status(inp, status, error)
        self._finished = True
        await self._until_handlers_finished()
        return result

    async def _until_handlers_finished(self) -> None:
        # Let update handlers that wait on this run answer before the workflow closes: an
        # update still running when the workflow closes never gets its answer.
        await workflow.wait_condition(workflow.all_handlers_finished)

    def _raise_if_cancelled(self) -> None:
        # Task.cancel() alone is not enough: when the cancel lands in the same workflow task
        # as the result the main task awaits, the SDK hands over the result and drops the
        # cancel. Every step therefore also checks the request itself.
        if self._cancel is not None:
            raise asyncio.CancelledError(self._cancel_reason())

    def _cancel_reason(self) -> str:
        req = self._cancel or CancelRequest()
        by = f" by {req.requested_by}" if req.requested_by else ""
        return f"cancelled{by}" + (f": {req.reason}" if req.reason else "")

    # -- decisions -------------------------------------------------------------------------

    @workflow.update(name="decide_tool_call")
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

    @workflow.signal(name="tool_decision")
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
                and workflow.patched(PATCH_EARLY_DECISIONS)
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

    async def _apply_signal_decision(self, d: ToolDecision, *, early: bool = False) -> None:
        refusal: Refusal | None = self._book.check_decision(d)
        if (
            refusal is None
            and early
            and early_approval_refusal(d) is not None
            and workflow.patched(PATCH_EARLY_DECISIONS)
        ):
            refusal = early_approval_refusal(d)
        if refusal is None:
            self._waits[d.tool_call_id].decision = d
            return
        if refusal.type == ErrorType.ALREADY_DECIDED:
            return  # a duplicate: ignored
        await workflow.execute_local_activity(
            "agentrun.append_event",
            AppendEventInput(
                run_id=self._run_id,
                type=EventType.TOOL_DECISION_INVALID,
                data={
                    "tool_call_id": d.tool_call_id,
                    "decision": d.decision,
                    "error": refusal.message,
                    "decided_by": d.decided_by,
                    "error_type": refusal.type.value,
                },
            ),
            result_type=int,
            **BOOKKEEPING,
            summary="record invalid decision",
        )

    @workflow.update(name="submit_tool_result")
    async def submit_tool_result(self, r: ToolResultSubmission) -> str:
        _raise_refusal(self._book.check_result(r, check_size=False))
        self._waits[r.tool_call_id].result = r
        return "accepted"

    @submit_tool_result.validator
    def _validate_result(self, r: ToolResultSubmission) -> None:
        _raise_refusal(self._book.check_result(r, check_size=True))

    # -- cancel ----------------------------------------------------------------------------

    def _request_cancel(self, req: CancelRequest) -> bool:
        if self._finished or self._status in TERMINAL or self._cancel is not None:
            return False
        self._cancel = req
        if self._main is not None and not self._main.done():
            self._main.cancel()
        return True

    @workflow.update(name="cancel")
    async def cancel(self, req: CancelRequest) -> CancelAnswer:
        if self._status in TERMINAL or self._finished:
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

    @workflow.signal(name="cancel")
    def cancel_signal(self, req: CancelRequest) -> None:
        self._request_cancel(req)

    # -- queries ---------------------------------------------------------------------------

    @workflow.query(name="status")
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
        )


def _raise_refusal(refusal: Refusal | None) -> None:
    """A refused decision or result: a typed, non-retryable error every client can tell apart
    (the validator's raise rejects the update before anything reaches history)."""
    if refusal is not None:
        raise ApplicationError(refusal.message, type=refusal.type.value, non_retryable=True)
