"""Activity inputs and results: what the workflow and its steps hand each other. Ids and
short previews only; conversation text stays in PostgreSQL."""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field

from agentrun.contracts.people import PendingCall, RecordedDecision
from agentrun.contracts.run import AgentConfig, Usage
from agentrun.protocol.statuses import RunStatus, ToolApproval, ToolKind


class ToolInfo(BaseModel):
    """What the workflow needs to know of a tool to schedule it (approval already resolved
    from the tool's default, the preset and the overrides)."""

    name: str
    approval: ToolApproval = ToolApproval.AUTO
    timeout_s: float = 60
    max_attempts: int = 3
    kind: ToolKind = ToolKind.SERVER
    parameters: dict[str, Any] = Field(default_factory=dict)
    # Set for a tool of an MCP server (activities/mcp_tools.py): where it comes from, its name
    # there and its annotations as listed when the run opened.
    source: str | None = None
    server: str | None = None
    server_tool: str | None = None
    annotations: dict[str, Any] | None = None


class OpenRunInput(BaseModel):
    """Input of the step "open run" (activity agentrun.prepare_run)."""

    run_id: str
    session_id: str
    prompt: str
    config: AgentConfig
    # None: the default tenant (and what a workflow from before tenants sends).
    tenant: str | None = None
    # A sub-agent's run: the run that started it (runs.parent_run_id).
    parent_run_id: str | None = None


class SessionBudget(BaseModel):
    """The budget stored on the run's session, and what the session's other runs used before
    this run opened: the workflow checks session usage against it from these figures and the
    usage its own activities return (never a database read from workflow code)."""

    max_cost_usd: Decimal | None = None
    max_total_tokens: int | None = None
    used_before: Usage = Field(default_factory=Usage)


class OpenedRun(BaseModel):
    """What opening a run answers: the model and the run's tools, approval resolved."""

    run_id: str
    model: str
    tools: list[ToolInfo] = Field(default_factory=list)
    # None: the session has no budget (and every run opened before budgets existed).
    session_budget: SessionBudget | None = None
    # With sub-agents: the folder the run's tools work in, which its sub-runs share.
    workspace: str | None = None


class ResumeRunInput(BaseModel):
    """Input of agentrun.resume_run: the execution after a continue-as-new takes the run over.
    The chain is named by its first execution's run id (the one that opened the run)."""

    run_id: str
    first_execution_run_id: str


class ListMcpToolsInput(BaseModel):
    """Input of agentrun.list_mcp_tools: list and record the tools of the run's MCP servers."""

    run_id: str
    config: AgentConfig | None = Field(
        default=None,
        description="Unset: the activity reads the run's config from its row (history stays "
        "free of the system prompt).",
    )


class SetStatusInput(BaseModel):
    run_id: str
    status: RunStatus
    error: str | None = None
    final_text_from_turn: int | None = None


class RequestCancelInput(BaseModel):
    """Input of agentrun.request_cancel: the run asks Temporal to cancel its own workflow."""

    run_id: str
    reason: str = ""


class ModelTurnInput(BaseModel):
    run_id: str
    session_id: str
    turn: int
    model: str
    tools: list[str] = Field(default_factory=list)
    config: AgentConfig | None = Field(
        default=None,
        description="Unset: the activity reads the run's config from its row, so history per "
        "turn does not grow with the prompt or the tools. Set by workers before that change.",
    )


class ToolCallRequest(BaseModel):
    id: str
    name: str
    arguments: str


class ModelTurnResult(BaseModel):
    turn: int
    text_preview: str = ""
    text_chars: int = 0
    tool_calls: list[ToolCallRequest] = Field(default_factory=list)
    finish_reason: str | None = None
    response_id: str | None = None
    usage: Usage = Field(default_factory=Usage)
    replayed: bool = False


class ExecuteToolInput(BaseModel):
    """Input of agentrun.execute_tool: run this call. skip_reason and given_result are only
    set by workflows from before agentrun.record_tool_outcome (still replayed and in flight):
    execute_tool then records them as record_tool_outcome does."""

    run_id: str
    session_id: str
    turn: int
    call: ToolCallRequest
    workspace: str | None = None
    skip_reason: str | None = Field(
        default=None, description="Old input: record this error result instead of running."
    )
    given_result: str | None = Field(
        default=None, description="Old input: a client-side tool's result to record as it is."
    )
    given_is_error: bool = False


class OutcomeKind(enum.StrEnum):
    """Why a tool call has a result that no tool run produced."""

    NOT_ENABLED = "not_enabled"  # a tool the run did not enable (never run nor offered)
    OVER_BUDGET = "over_budget"  # the run's tool-call limit was reached
    REJECTED = "rejected"  # a person (or the approval timeout) rejected it
    CLIENT_RESULT = "client_result"  # the caller's result of a client-side tool
    NO_CLIENT_RESULT = "no_client_result"  # the caller sent none in time
    FAILED = "failed"  # the tool's own retries are spent
    ABANDONED = "abandoned"  # the run left the batch (cancelled or failed) before it ran
    SUBRUN = "subrun"  # a sub-agent's answer (or why there is none)


class ToolOutcomeInput(BaseModel):
    """Input of agentrun.record_tool_outcome: record this result of a call that was not run
    (or whose run failed for good). A call already finished keeps its recorded result."""

    run_id: str
    session_id: str
    turn: int
    call: ToolCallRequest
    kind: OutcomeKind
    text: str
    is_error: bool = True
    text_of_run: str | None = Field(
        default=None, description="A child run whose whole final text is the result instead."
    )


class ToolResult(BaseModel):
    tool_call_id: str
    name: str
    is_error: bool
    preview: str = ""
    replayed: bool = False


class RequestWaitInput(BaseModel):
    run_id: str
    calls: list[PendingCall]


class RecordDecisionInput(BaseModel):
    run_id: str
    decision: RecordedDecision


class AppendEventInput(BaseModel):
    run_id: str
    type: str
    data: dict[str, Any] = Field(default_factory=dict)
    key: str | None = None
