"""The workflow on the real dev server with stand-in activities registered under their real
names (the samples-python habit): approvals, edits, rejections, limits, disabled tools, client
results, failures and cancels, where a real model or database is not the point.

The stand-ins record what the workflow asked of them; the tests drive updates and assert on
those records, the query and the result. Each run's own history replays at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from agentrun.contracts import (
    AgentConfig,
    AppendEventInput,
    CancelAnswer,
    CancelRequest,
    ExecuteToolInput,
    ModelTurnInput,
    ModelTurnResult,
    OpenedRun,
    OpenRunInput,
    OutcomeKind,
    RecordDecisionInput,
    RecordedDecision,
    RequestCancelInput,
    RequestWaitInput,
    RunResult,
    RunStatus,
    SetStatusInput,
    StartRunInput,
    ToolCallRequest,
    ToolDecision,
    ToolInfo,
    ToolKind,
    ToolOutcomeInput,
    ToolResult,
    ToolResultSubmission,
    Usage,
    WaitKind,
)
from agentrun.protocol.events import arguments_sha256
from agentrun.protocol.names import Activity, Update
from agentrun.protocol.statuses import Decision, ToolApproval
from workflows import ALL_WORKFLOWS
from workflows.agent import AgentRunWorkflow
from workflows.steps import CLOSE_REASON

BASH = ToolInfo(name="bash", approval=ToolApproval.NEEDS_APPROVAL, timeout_s=60)
CALCULATOR = ToolInfo(name="calculator")
WEATHER = ToolInfo(name="weather", kind=ToolKind.CLIENT)
BOUND = 60


def call(name: str, call_id: str, **arguments: Any) -> ToolCallRequest:
    return ToolCallRequest(id=call_id, name=name, arguments=json.dumps(arguments))


def turn(n: int, *calls: ToolCallRequest, text: str = "") -> ModelTurnResult:
    return ModelTurnResult(
        turn=n,
        text_preview=text,
        text_chars=len(text),
        tool_calls=list(calls),
        usage=Usage(llm_calls=1, turns=1),
    )


@dataclass
class StandIns:
    """Every activity of the workflow, scripted: the model's turns in order, the tools given."""

    tools: list[ToolInfo]
    turns: list[ModelTurnResult]
    fail_tools: set[str] = field(default_factory=set)
    statuses: list[RunStatus] = field(default_factory=list)
    model_inputs: list[ModelTurnInput] = field(default_factory=list)
    runs: list[ExecuteToolInput] = field(default_factory=list)
    outcomes: list[ToolOutcomeInput] = field(default_factory=list)
    decisions: list[RecordedDecision] = field(default_factory=list)
    cancel_requests: list[str] = field(default_factory=list)
    refuse_cancel: bool = False
    # Set: the model turn waits for it, deaf to a cancel (it never heartbeats), then answers.
    hold_model: asyncio.Event | None = None
    model_started: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: asyncio.Event = field(default_factory=asyncio.Event)

    @activity.defn(name=Activity.PREPARE_RUN)
    async def open_run(self, inp: OpenRunInput) -> OpenedRun:
        return OpenedRun(run_id=inp.run_id, model="stand-in", tools=self.tools)

    @activity.defn(name=Activity.SET_STATUS)
    async def set_status(self, inp: SetStatusInput) -> RunResult:
        self.statuses.append(inp.status)
        return RunResult(run_id=inp.run_id, session_id="s", status=inp.status, error=inp.error)

    @activity.defn(name=Activity.REQUEST_WAITS)
    async def request_waits(self, inp: RequestWaitInput) -> bool:
        self.waiting.set()
        return True

    @activity.defn(name=Activity.RECORD_DECISION)
    async def record_decision(self, inp: RecordDecisionInput) -> RecordedDecision:
        self.decisions.append(inp.decision)
        return inp.decision

    @activity.defn(name=Activity.APPEND_EVENT)
    async def append_event(self, inp: AppendEventInput) -> int:
        return 1

    @activity.defn(name=Activity.REQUEST_CANCEL)
    async def request_cancel(self, inp: RequestCancelInput) -> None:
        # What the real one does: the run closes as Canceled only once Temporal cancels it.
        self.cancel_requests.append(inp.reason)
        if self.refuse_cancel:
            raise ApplicationError("permission denied", non_retryable=True)
        handle = activity.client().get_workflow_handle(inp.run_id)
        await handle.cancel(reason=inp.reason)

    @activity.defn(name=Activity.MODEL_TURN)
    async def model_turn(self, inp: ModelTurnInput) -> ModelTurnResult:
        self.model_inputs.append(inp)
        self.model_started.set()
        if self.hold_model is not None:
            await self.hold_model.wait()
        return self.turns[inp.turn - 1]

    @activity.defn(name=Activity.EXECUTE_TOOL)
    async def execute_tool(self, inp: ExecuteToolInput) -> ToolResult:
        # A run started on this code never asks execute_tool to record an outcome.
        assert inp.skip_reason is None and inp.given_result is None, inp
        self.runs.append(inp)
        if inp.call.name in self.fail_tools:
            raise ApplicationError("boom", non_retryable=True)
        return ToolResult(tool_call_id=inp.call.id, name=inp.call.name, is_error=False)

    @activity.defn(name=Activity.RECORD_TOOL_OUTCOME)
    async def record_tool_outcome(self, inp: ToolOutcomeInput) -> ToolResult:
        self.outcomes.append(inp)
        return ToolResult(
            tool_call_id=inp.call.id, name=inp.call.name, is_error=inp.is_error, preview=inp.text
        )

    def activities(self) -> list[Any]:
        return [
            self.open_run,
            self.set_status,
            self.request_waits,
            self.record_decision,
            self.append_event,
            self.request_cancel,
            self.model_turn,
            self.execute_tool,
            self.record_tool_outcome,
        ]

    def outcome_kinds(self) -> dict[str, OutcomeKind]:
        return {o.call.id: o.kind for o in self.outcomes}


@dataclass
class Harness:
    env: WorkflowEnvironment
    task_queue: str

    @contextlib.asynccontextmanager
    async def start(
        self, stand_ins: StandIns, **config: Any
    ) -> AsyncIterator[WorkflowHandle[AgentRunWorkflow, RunResult]]:
        """A worker with the stand-ins, and a run on it; its history replays afterwards."""
        run_id = f"run-{uuid.uuid4()}"
        async with Worker(
            self.env.client,
            task_queue=self.task_queue,
            workflows=ALL_WORKFLOWS,
            activities=stand_ins.activities(),
            graceful_shutdown_timeout=timedelta(seconds=1),
        ):
            handle = await self.env.client.start_workflow(
                AgentRunWorkflow.run,
                StartRunInput(
                    run_id=run_id,
                    session_id=f"s-{uuid.uuid4()}",
                    prompt="stand-in run",
                    config=AgentConfig(**config),
                ),
                id=run_id,
                task_queue=self.task_queue,
            )
            yield handle
            await _replays(handle)


@pytest.fixture
def harness(temporal_env: WorkflowEnvironment, task_queue: str) -> Harness:
    return Harness(temporal_env, task_queue)


async def _replays(handle: WorkflowHandle[Any, Any]) -> None:
    replayer = Replayer(workflows=ALL_WORKFLOWS, data_converter=pydantic_data_converter)
    await replayer.replay_workflow(await handle.fetch_history())


async def _result(handle: WorkflowHandle[AgentRunWorkflow, RunResult]) -> RunResult:
    return await asyncio.wait_for(handle.result(), BOUND)


async def _decide(
    handle: WorkflowHandle[AgentRunWorkflow, RunResult], stand_ins: StandIns, d: ToolDecision
) -> RecordedDecision:
    await asyncio.wait_for(stand_ins.waiting.wait(), BOUND)
    # By name: with `@workflow.update(name=...)` on an async handler the SDK's typing takes the
    # coroutine for the result, so a method reference would not type-check here.
    return await handle.execute_update(Update.DECIDE_TOOL_CALL, d, result_type=RecordedDecision)


async def test_an_approved_call_runs_and_the_run_goes_back_to_running(harness: Harness) -> None:
    bash = call("bash", "c1", command="ls")
    stand_ins = StandIns([BASH], [turn(1, bash), turn(2, text="Listed.")])
    async with harness.start(stand_ins) as handle:
        await asyncio.wait_for(stand_ins.waiting.wait(), BOUND)
        view = await handle.query(AgentRunWorkflow.status)
        assert view.status == RunStatus.WAITING_APPROVAL
        assert [(p.tool_call_id, p.kind) for p in view.pending] == [("c1", WaitKind.APPROVAL)]
        sha = arguments_sha256(bash.arguments)
        recorded = await _decide(
            handle,
            stand_ins,
            ToolDecision(
                tool_call_id="c1",
                decision=Decision.APPROVE,
                arguments_sha256=sha,
                decided_by="alice",
            ),
        )
        result = await _result(handle)
    assert (recorded.decision, recorded.decided_by) == (Decision.APPROVE, "alice")
    assert result.status == RunStatus.DONE
    assert [r.call for r in stand_ins.runs] == [bash]
    assert stand_ins.outcomes == []
    # WAITING_APPROVAL is written by request_waits with the calls; set_status moves it back.
    assert stand_ins.statuses == [RunStatus.RUNNING, RunStatus.RUNNING, RunStatus.DONE]


async def test_an_edited_approval_runs_the_edited_arguments(harness: Harness) -> None:
    stand_ins = StandIns([BASH], [turn(1, call("bash", "c1", command="rm -rf /")), turn(2)])
    async with harness.start(stand_ins) as handle:
        await _decide(
            handle,
            stand_ins,
            ToolDecision(
                tool_call_id="c1", decision=Decision.APPROVE_WITH_EDITS, arguments={"command": "ls"}
            ),
        )
        await _result(handle)
    assert [json.loads(r.call.arguments) for r in stand_ins.runs] == [{"command": "ls"}]


async def test_a_rejected_call_is_recorded_never_run(harness: Harness) -> None:
    stand_ins = StandIns([BASH], [turn(1, call("bash", "c1", command="rm -rf /")), turn(2)])
    async with harness.start(stand_ins) as handle:
        await _decide(
            handle,
            stand_ins,
            ToolDecision(
                tool_call_id="c1", decision=Decision.REJECT, decided_by="bob", reason="no"
            ),
        )
        result = await _result(handle)
    assert result.status == RunStatus.DONE
    assert stand_ins.runs == []
    [outcome] = stand_ins.outcomes
    assert outcome.kind == OutcomeKind.REJECTED and outcome.is_error
    assert outcome.text == "error: the call was rejected by bob: no"


async def test_an_approval_that_times_out_is_a_rejection(harness: Harness) -> None:
    stand_ins = StandIns([BASH], [turn(1, call("bash", "c1", command="ls")), turn(2)])
    async with harness.start(stand_ins, approval_timeout_s=1) as handle:
        await _result(handle)
    assert [(d.decision, d.decided_by) for d in stand_ins.decisions] == [
        (Decision.REJECT, "timeout")
    ]
    assert stand_ins.outcome_kinds() == {"c1": OutcomeKind.REJECTED}


async def test_limits_and_disabled_tools_record_outcomes_instead_of_runs(
    harness: Harness,
) -> None:
    calls = [
        call("calculator", "c1", expression="1+1"),
        call("calculator", "c2", expression="2+2"),
        call("bash", "c3", command="touch /tmp/pwned"),
    ]
    stand_ins = StandIns([CALCULATOR], [turn(1, *calls), turn(2, text="done")])
    async with harness.start(stand_ins, max_tool_calls=1) as handle:
        result = await _result(handle)
    assert result.status == RunStatus.DONE
    assert [r.call.id for r in stand_ins.runs] == ["c1"]
    assert stand_ins.outcome_kinds() == {
        "c2": OutcomeKind.OVER_BUDGET,
        "c3": OutcomeKind.NOT_ENABLED,
    }
    # The budget is spent: the last turn is offered no tools.
    assert [m.tools for m in stand_ins.model_inputs] == [["calculator"], []]


async def test_a_client_result_is_recorded_as_given(harness: Harness) -> None:
    stand_ins = StandIns([WEATHER], [turn(1, call("weather", "w1", city="Paris")), turn(2)])
    async with harness.start(stand_ins) as handle:
        await asyncio.wait_for(stand_ins.waiting.wait(), BOUND)
        await handle.execute_update(
            Update.SUBMIT_TOOL_RESULT,
            ToolResultSubmission(tool_call_id="w1", result={"sky": "sunny"}),
            result_type=str,
        )
        await _result(handle)
    [outcome] = stand_ins.outcomes
    assert (outcome.kind, outcome.text, outcome.is_error) == (
        OutcomeKind.CLIENT_RESULT,
        '{"sky": "sunny"}',
        False,
    )


async def test_a_tool_that_fails_for_good_gives_an_error_result_and_the_run_goes_on(
    harness: Harness,
) -> None:
    stand_ins = StandIns(
        [CALCULATOR],
        [turn(1, call("calculator", "c1", expression="1/0")), turn(2, text="ok")],
        fail_tools={"calculator"},
    )
    async with harness.start(stand_ins) as handle:
        result = await _result(handle)
    assert result.status == RunStatus.DONE
    [outcome] = stand_ins.outcomes
    assert outcome.kind == OutcomeKind.FAILED
    assert outcome.text == "error: calculator failed: boom"


async def test_a_cancel_while_waiting_abandons_the_call_and_ends_canceled(
    harness: Harness,
) -> None:
    stand_ins = StandIns([BASH], [turn(1, call("bash", "c1", command="ls"))])
    async with harness.start(stand_ins) as handle:
        await asyncio.wait_for(stand_ins.waiting.wait(), BOUND)
        answer = await handle.execute_update(
            Update.CANCEL,
            CancelRequest(reason="stop", requested_by="tester"),
            result_type=CancelAnswer,
        )
        # Answered first, then closed as Canceled: a canceled workflow has no result.
        with pytest.raises(WorkflowFailureError) as info:
            await _result(handle)
        assert isinstance(info.value.cause, CancelledError)
        assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert isinstance(answer, CancelAnswer) and answer.status == RunStatus.CANCELED
    assert stand_ins.cancel_requests == [CLOSE_REASON]
    [outcome] = stand_ins.outcomes
    assert outcome.kind == OutcomeKind.ABANDONED
    assert outcome.text == "cancelled: the run was cancelled by tester: stop"
    assert stand_ins.statuses[-1] == RunStatus.CANCELED


async def test_a_run_whose_cancel_request_fails_completes_with_its_canceled_result(
    harness: Harness,
) -> None:
    """The fallback: Temporal would not cancel the workflow (a client without the right, say),
    so the workflow completes with the CANCELED result, as runs did before the close status
    matched the run's."""
    stand_ins = StandIns([BASH], [turn(1, call("bash", "c1", command="ls"))], refuse_cancel=True)
    async with harness.start(stand_ins) as handle:
        await asyncio.wait_for(stand_ins.waiting.wait(), BOUND)
        answer = await handle.execute_update(
            Update.CANCEL, CancelRequest(reason="stop"), result_type=CancelAnswer
        )
        result = await _result(handle)
        assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    assert answer.status == RunStatus.CANCELED
    assert (result.status, result.error) == (RunStatus.CANCELED, "cancelled: stop")
    assert stand_ins.cancel_requests == [CLOSE_REASON]


async def test_a_temporal_cancel_that_lands_with_a_turns_result_still_cancels_the_run(
    harness: Harness,
) -> None:
    """The model turn answers after Temporal asked to cancel it: the SDK hands the result to
    the run and drops the cancel, so the run checks the request itself and ends CANCELED."""
    release = asyncio.Event()
    stand_ins = StandIns([], [turn(1, text="an answer nobody waits for")], hold_model=release)
    async with harness.start(stand_ins) as handle:
        await asyncio.wait_for(stand_ins.model_started.wait(), BOUND)
        await handle.cancel()

        async def activity_cancel_requested() -> bool:
            history = await handle.fetch_history()
            return any(
                e.HasField("activity_task_cancel_requested_event_attributes")
                for e in history.events
            )

        deadline = asyncio.get_running_loop().time() + BOUND
        while not await activity_cancel_requested():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
        release.set()
        with pytest.raises(WorkflowFailureError) as info:
            await _result(handle)
        assert isinstance(info.value.cause, CancelledError)
        assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert stand_ins.statuses == [RunStatus.RUNNING, RunStatus.CANCELED]
    assert stand_ins.cancel_requests == []  # Temporal's own cancel: nothing to ask for
