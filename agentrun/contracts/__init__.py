"""Every type that crosses the workflow boundary: workflow input and result, activity inputs
and results. Clients, workflows and activities all import this one module (its parts: run.py the
run's input, config and result; people.py update, signal and query payloads; steps.py activity
inputs and results), and every client and
worker uses agentrun.converter.data_converter (temporalio's pydantic_data_converter plus the
payload codec).

Fields are only ever added, and only as optional, so runs in flight keep decoding. Payloads
are read tolerantly and made strictly (see Strict), so that in a rolling deploy an older worker
reads what a newer client or worker sends.

Text that PostgreSQL cannot store (a NUL character, a lone UTF-16 surrogate) and a model name it
cannot hold are refused where they enter, with a clear error, because a write the database
refuses would otherwise be retried for ever. The workflow input (StartRunInput, AgentConfig,
ClientTool) is checked when it is built in Python (clients, CLI, API) and not when it is
decoded from a Temporal payload: a workflow whose input does not decode fails its workflow
task over and over instead of ending, so the worker decodes it and refuses it itself
(`storage_problems`, when it opens the run). Update and signal payloads (decisions, results, cancel)
are checked always: one that does not decode is refused to its sender and the run is untouched.
The checks themselves are in agentrun.text.

Statuses and kinds are the protocol's enums (agentrun.protocol.statuses): StrEnums, so the JSON
on the wire is the same strings as before.
"""

from __future__ import annotations

from agentrun.contracts.carry import RunCarry
from agentrun.contracts.people import (
    CancelAnswer,
    CancelRequest,
    PendingCall,
    RecordedDecision,
    RunStatusView,
    ToolDecision,
    ToolResultSubmission,
)
from agentrun.contracts.run import (
    DEFAULT_FIRST_TOKEN_TIMEOUT_S,
    DEFAULT_SYSTEM_PROMPT,
    ID_PATTERN,
    MAX_PROMPT_CHARS,
    MAX_TURNS_LIMIT,
    RESULT_CAP,
    RESULT_TEXT_LIMIT,
    AgentConfig,
    ClientTool,
    McpServerChoice,
    RunResult,
    RunWebhook,
    StartRunInput,
    Strict,
    StrictModel,
    Usage,
    preview,
    storage_problems,
    strict_validate,
)
from agentrun.contracts.steps import (
    AppendEventInput,
    ExecuteToolInput,
    ListMcpToolsInput,
    ModelTurnInput,
    ModelTurnResult,
    OpenedRun,
    OpenRunInput,
    OutcomeKind,
    RecordDecisionInput,
    RequestCancelInput,
    RequestWaitInput,
    ResumeRunInput,
    SessionBudget,
    SetStatusInput,
    ToolCallRequest,
    ToolInfo,
    ToolOutcomeInput,
    ToolResult,
)
from agentrun.protocol.statuses import (
    ApprovalPreset,
    Decision,
    RunStatus,
    ToolApproval,
    ToolKind,
    WaitKind,
)
from agentrun.text import (
    MAX_MODEL_NAME_CHARS,
    model_name_problem,
    storable_text,
    text_problem,
)

# StartRunInput.carry is a RunCarry, which is made of the run's own types (see carry.py).
StartRunInput.model_rebuild(_types_namespace={"RunCarry": RunCarry})

__all__ = [
    "DEFAULT_FIRST_TOKEN_TIMEOUT_S",
    "DEFAULT_SYSTEM_PROMPT",
    "ID_PATTERN",
    "MAX_MODEL_NAME_CHARS",
    "MAX_PROMPT_CHARS",
    "MAX_TURNS_LIMIT",
    "RESULT_CAP",
    "RESULT_TEXT_LIMIT",
    "AgentConfig",
    "AppendEventInput",
    "ApprovalPreset",
    "CancelAnswer",
    "CancelRequest",
    "ClientTool",
    "Decision",
    "ExecuteToolInput",
    "ListMcpToolsInput",
    "McpServerChoice",
    "ModelTurnInput",
    "ModelTurnResult",
    "OpenRunInput",
    "OpenedRun",
    "OutcomeKind",
    "PendingCall",
    "RecordDecisionInput",
    "RecordedDecision",
    "RequestCancelInput",
    "RequestWaitInput",
    "ResumeRunInput",
    "RunCarry",
    "RunResult",
    "RunStatus",
    "RunStatusView",
    "RunWebhook",
    "SessionBudget",
    "SetStatusInput",
    "StartRunInput",
    "Strict",
    "StrictModel",
    "ToolApproval",
    "ToolCallRequest",
    "ToolDecision",
    "ToolInfo",
    "ToolKind",
    "ToolOutcomeInput",
    "ToolResult",
    "ToolResultSubmission",
    "Usage",
    "WaitKind",
    "model_name_problem",
    "preview",
    "storable_text",
    "storage_problems",
    "strict_validate",
    "text_problem",
]
