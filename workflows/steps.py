"""The run's steps as Temporal schedules them: one function per step, each calling its activity
by method reference with the options of its kind (workflows/options.py). Only workflow code
calls these. The activities' registered names (agentrun.protocol.names.Activity) never change:
runs in flight and tests/histories/ depend on them.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    # Passed through, not re-imported in the sandbox: the workflow needs the methods'
    # definitions (name, argument and result types) only, never their I/O.
    from activities.model import ModelActivities
    from activities.runs import RunActivities
    from activities.tool_exec import ToolActivities
    from agentrun.contracts import (
        AppendEventInput,
        ExecuteToolInput,
        ListMcpToolsInput,
        ModelTurnInput,
        ModelTurnResult,
        OpenedRun,
        OpenRunInput,
        OutcomeKind,
        PendingCall,
        RecordDecisionInput,
        RecordedDecision,
        RequestCancelInput,
        RequestWaitInput,
        ResumeRunInput,
        RunResult,
        RunStatus,
        SetStatusInput,
        StartRunInput,
        ToolCallRequest,
        ToolDecision,
        ToolInfo,
        ToolOutcomeInput,
        ToolResult,
        WaitKind,
    )
    from agentrun.protocol.events import EventType
    from agentrun.protocol.names import Activity
    from agentrun.store.events import event_key
    from workflows.options import (
        BOOKKEEPING,
        CHILD_END,
        CLOSE_REQUEST,
        LIST_MCP_TOOLS,
        RECORD_OUTCOME,
        model_turn_options,
        tool_run_options,
    )
    from workflows.rules import Outcome, Refusal

# workflow.patched ids: each guards a change of the commands a run issues, so that histories
# recorded before it (tests/histories/) still replay. Never rename or reuse one.
PATCH_ABANDON_BATCH = "abandoned-tool-calls-are-cancelled-and-recorded"
PATCH_EARLY_DECISIONS = "early-decisions-need-arguments-sha256"
PATCH_OUTCOMES = "tool-outcomes-recorded-by-their-own-activity"
PATCH_CLOSE_CANCELED = "cancelled-runs-close-as-canceled"
PATCH_REFUSAL_FAILED = "refused-runs-publish-failed"
PATCH_KEEP_CANCEL = "a-temporal-cancel-is-never-dropped"
PATCH_CONTINUE_AS_NEW = "long-runs-continue-as-new"
PATCH_SUBAGENTS = "sub-agents-run-as-child-workflows"

# The reason on the cancel request a run cancelled by update or signal sends for itself.
CLOSE_REASON = "the run was cancelled by its cancel update or signal (its record says by whom)"


def start_open_run(inp: StartRunInput) -> workflow.ActivityHandle[OpenedRun]:
    return workflow.start_local_activity_method(
        RunActivities.open_run,
        OpenRunInput(
            run_id=inp.run_id,
            session_id=inp.session_id,
            prompt=inp.prompt,
            config=inp.config,
            tenant=inp.tenant,
            parent_run_id=inp.parent.run_id if inp.parent else None,
        ),
        **BOOKKEEPING,
        summary="open run",
    )


def start_resume_run(run_id: str, first_execution_run_id: str) -> workflow.ActivityHandle[None]:
    return workflow.start_local_activity_method(
        RunActivities.resume_run,
        ResumeRunInput(run_id=run_id, first_execution_run_id=first_execution_run_id),
        **BOOKKEEPING,
        summary="resume run",
    )


async def list_mcp_tools(inp: StartRunInput) -> list[ToolInfo]:
    # By name: the activity's module imports the mcp client, which clients of runs (they
    # import this module) have no need to load.
    return await workflow.execute_activity(
        Activity.LIST_MCP_TOOLS,
        ListMcpToolsInput(run_id=inp.run_id),
        result_type=list[ToolInfo],
        **LIST_MCP_TOOLS,
        summary="list MCP tools",
    )


async def set_status(run_id: str, status: RunStatus, error: str | None) -> RunResult:
    return await workflow.execute_local_activity_method(
        RunActivities.set_status,
        SetStatusInput(run_id=run_id, status=status, error=error),
        **BOOKKEEPING,
        summary=f"status {status}",
    )


def start_request_cancel(run_id: str) -> workflow.ActivityHandle[None]:
    return workflow.start_local_activity_method(
        RunActivities.request_cancel,
        # Not the person's reason: the cancel request's reason is stored in plaintext (no
        # payload codec reaches it); the record and the memo keep the person's.
        RequestCancelInput(run_id=run_id, reason=CLOSE_REASON),
        **CLOSE_REQUEST,
        summary="close as canceled",
    )


async def model_turn(
    inp: StartRunInput, turn: int, model: str, tools: list[str]
) -> ModelTurnResult:
    return await workflow.execute_activity_method(
        ModelActivities.model_turn,
        # Ids only: the activity reads the config from the run's row, so history per turn
        # does not grow with the system prompt or the tools.
        ModelTurnInput(
            run_id=inp.run_id, session_id=inp.session_id, turn=turn, model=model, tools=tools
        ),
        **model_turn_options(inp.config),
        summary=f"model turn {turn}",
    )


async def request_waits(run_id: str, pending: list[PendingCall]) -> bool:
    approval = any(p.kind == WaitKind.APPROVAL for p in pending)
    return await workflow.execute_local_activity_method(
        RunActivities.request_waits,
        RequestWaitInput(run_id=run_id, calls=pending),
        **BOOKKEEPING,
        summary="request approval" if approval else "request client result",
    )


async def record_decision(run_id: str, decision: RecordedDecision) -> RecordedDecision:
    return await workflow.execute_local_activity_method(
        RunActivities.record_decision,
        RecordDecisionInput(run_id=run_id, decision=decision),
        **BOOKKEEPING,
        summary=f"decision {decision.decision} {decision.name}",
    )


async def record_invalid_decision(run_id: str, d: ToolDecision, refusal: Refusal) -> int:
    return await workflow.execute_local_activity_method(
        RunActivities.append_event,
        AppendEventInput(
            run_id=run_id,
            type=EventType.TOOL_DECISION_INVALID,
            data={
                "tool_call_id": d.tool_call_id,
                "decision": d.decision,
                "error": refusal.message,
                "decided_by": d.decided_by,
                "error_type": refusal.type.value,
            },
        ),
        **BOOKKEEPING,
        summary="record invalid decision",
    )


async def record_budget_exceeded(run_id: str, data: dict[str, Any]) -> int:
    """The run's budget.exceeded event (workflows/budgets.py), once per run."""
    return await workflow.execute_local_activity_method(
        RunActivities.append_event,
        AppendEventInput(
            run_id=run_id,
            type=EventType.BUDGET_EXCEEDED,
            data=data,
            key=event_key(EventType.BUDGET_EXCEEDED),
        ),
        **BOOKKEEPING,
        summary="budget exceeded",
    )


async def run_tool(
    inp: StartRunInput, turn: int, call: ToolCallRequest, info: ToolInfo | None
) -> ToolResult:
    return await workflow.execute_activity_method(
        ToolActivities.execute_tool,
        ExecuteToolInput(
            run_id=inp.run_id,
            session_id=inp.session_id,
            turn=turn,
            call=call,
            workspace=inp.config.workspace,
        ),
        **tool_run_options(info, inp.config),
        summary=f"tool {call.name}",
    )


async def record_outcome(
    inp: StartRunInput, turn: int, call: ToolCallRequest, info: ToolInfo | None, outcome: Outcome
) -> ToolResult:
    """Record the result of a call that was not run (a call that has one keeps it)."""
    if not workflow.patched(PATCH_OUTCOMES):
        return await _record_outcome_by_execute_tool(inp, turn, call, info, outcome)
    return await workflow.execute_activity_method(
        ToolActivities.record_tool_outcome,
        ToolOutcomeInput(
            run_id=inp.run_id,
            session_id=inp.session_id,
            turn=turn,
            call=call,
            kind=outcome.kind,
            text=outcome.text,
            is_error=outcome.is_error,
        ),
        **RECORD_OUTCOME,
        summary=f"record {outcome.kind} of tool {call.name}",
    )


async def _record_outcome_by_execute_tool(
    inp: StartRunInput, turn: int, call: ToolCallRequest, info: ToolInfo | None, outcome: Outcome
) -> ToolResult:
    """The same, as runs from before PATCH_OUTCOMES did it (their histories replay): through
    agentrun.execute_tool with skip_reason or given_result."""
    given = outcome.kind == OutcomeKind.CLIENT_RESULT
    arg = ExecuteToolInput(
        run_id=inp.run_id,
        session_id=inp.session_id,
        turn=turn,
        call=call,
        workspace=inp.config.workspace,
        skip_reason=None if given else outcome.text,
        given_result=outcome.text if given else None,
        given_is_error=outcome.is_error if given else False,
    )
    if outcome.kind == OutcomeKind.FAILED:
        return await workflow.execute_activity_method(
            ToolActivities.execute_tool,
            arg,
            **RECORD_OUTCOME,
            summary=f"record failure of tool {call.name}",
        )
    return await workflow.execute_activity_method(
        ToolActivities.execute_tool,
        arg,
        **tool_run_options(info, inp.config),
        summary=f"tool {call.name}",
    )


async def record_outcome_input(inp: ToolOutcomeInput, summary: str) -> ToolResult:
    """The record of a tool outcome the workflow made itself (a sub-agent's answer)."""
    return await workflow.execute_activity_method(
        ToolActivities.record_tool_outcome, inp, **RECORD_OUTCOME, summary=summary
    )


async def end_subrun(inp: SetStatusInput, summary: str) -> RunResult:
    """The end of a child run that did not answer, recorded by its parent."""
    return await workflow.execute_local_activity_method(
        RunActivities.set_status, inp, **CHILD_END, summary=summary
    )


async def append_event(inp: AppendEventInput) -> int:
    return await workflow.execute_local_activity_method(
        RunActivities.append_event, inp, **BOOKKEEPING, summary=str(inp.type)
    )
