"""The event log's vocabulary: every event type, its payload, and one parser.

A run's timeline is the table run_events: (run_id, seq, type, data). `seq` is per run, gapless
and in commit order, so a follower that reads `seq > cursor` never skips or repeats an event.
Writers build one of the payload models below and append it (the model knows its type); readers
turn a stored row into a typed event with `parse_event`. A type this code does not know (written
by a newer version) parses as `UnknownEvent`, and unknown payload fields are kept, so an older
reader keeps going. The README's event table is generated from these models (`event_table`).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from agentrun.protocol.event_base import EventData, EventType, ToolWaitData
from agentrun.protocol.features import (
    BudgetExceededData,
    ContextCompactedData,
    ContextCompactionFailedData,
    MessageInterruptedData,
    RunRolledBackData,
    SessionDeletedData,
    SubRunFinishedData,
    SubRunStartedData,
    SubRunWaitingData,
)
from agentrun.protocol.statuses import Decision, RunStatus


class RunStatusData(EventData):
    TYPE = EventType.RUN_STATUS
    ABOUT = (
        "the run moved to `status` from `previous` (`error` says why it failed); the first "
        "one (QUEUED) also carries `session_id`, `model`, the worker's `model_endpoint` (its "
        "OPENAI_BASE_URL without secrets; absent for older runs) and the first 2,000 "
        "characters of `prompt`"
    )
    status: RunStatus
    previous: RunStatus | None = None
    error: str | None = None
    session_id: str | None = None
    model: str | None = None
    model_endpoint: str | None = None
    prompt: str | None = Field(default=None, description="The first 2,000 characters.")


class MessageDeltaData(EventData):
    TYPE = EventType.MESSAGE_DELTA
    ABOUT = "streamed text, coalesced: the first at once, then at most one per flush interval"
    turn: int
    attempt: int
    text: str


class StreamResetData(EventData):
    TYPE = EventType.STREAM_RESET
    ABOUT = "a retried model attempt begins: drop the partial text of this `turn` shown so far"
    turn: int
    attempt: int


class ToolCallPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    type: str = "function"
    function: dict[str, Any]


class MessageCompletedData(EventData):
    TYPE = EventType.MESSAGE_COMPLETED
    ABOUT = "the assistant message of a turn as recorded: all its `text` and its `tool_calls`"
    turn: int
    attempt: int
    role: str = "assistant"
    text: str
    tool_calls: list[ToolCallPart] = Field(default_factory=list)


class ToolCallData(EventData):
    TYPE = EventType.TOOL_CALL
    ABOUT = "the model asked for a tool call; `arguments` is the JSON text the model wrote"
    turn: int
    tool_call_id: str
    name: str
    arguments: str


class ToolResultData(EventData):
    TYPE = EventType.TOOL_RESULT
    ABOUT = "a tool call's result as recorded (and sent to the model)"
    tool_call_id: str
    name: str
    is_error: bool
    result: str


class LlmUsageData(EventData):
    TYPE = EventType.LLM_USAGE
    ABOUT = (
        "tokens, timings and cost of the turn's successful model call (`cost_usd` an exact "
        "decimal string, absent when the model has no known price; `cached_tokens` are part "
        "of `prompt_tokens`, `reasoning_tokens` of `completion_tokens`)"
    )
    turn: int
    attempt: int
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int | None = None
    time_to_first_token_ms: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: Decimal | None = Field(
        default=None, description="Exact US dollars as a string; absent: no price known."
    )


class ErrorData(EventData):
    TYPE = EventType.ERROR
    ABOUT = (
        "a failed model attempt; `retryable` says whether another attempt follows (after "
        "`retry_after_s` when the provider asked for a wait)"
    )
    turn: int | None = None
    attempt: int | None = None
    message: str
    retryable: bool = False
    retry_after_s: float | None = None


def arguments_sha256(arguments: str) -> str:
    """The hash that binds a decision to the arguments a person saw: the SHA-256 of the
    arguments string (UTF-8), hex. `tool.approval_requested` carries it; a decision sends it
    back as `arguments_sha256`."""
    return hashlib.sha256(arguments.encode()).hexdigest()


class ToolResultRequestedData(ToolWaitData):
    TYPE = EventType.TOOL_RESULT_REQUESTED
    ABOUT = "a client-side tool call waits for the caller's result (`submit_tool_result`)"


class ToolDecidedData(EventData):
    TYPE = EventType.TOOL_DECIDED
    ABOUT = "a decision was recorded; `arguments` are the ones that run (edited or not)"
    tool_call_id: str
    name: str
    decision: Decision
    decided_by: str
    reason: str | None = None
    arguments: str
    edited: bool = False


class ToolDecisionInvalidData(EventData):
    TYPE = EventType.TOOL_DECISION_INVALID
    ABOUT = (
        "a decision sent by signal could not be applied (`error`, and the `error_type` a "
        "refused update would carry); nothing changed"
    )
    tool_call_id: str
    decision: str
    error: str
    decided_by: str | None = None
    error_type: str | None = None


PAYLOADS: dict[EventType, type[EventData]] = {
    cls.TYPE: cls
    for cls in (
        RunStatusData,
        MessageDeltaData,
        StreamResetData,
        MessageCompletedData,
        ToolCallData,
        ToolResultData,
        LlmUsageData,
        ErrorData,
        ToolWaitData,
        ToolResultRequestedData,
        ToolDecidedData,
        ToolDecisionInvalidData,
        BudgetExceededData,
        SubRunStartedData,
        SubRunWaitingData,
        SubRunFinishedData,
        ContextCompactedData,
        ContextCompactionFailedData,
        SessionDeletedData,
        MessageInterruptedData,
        RunRolledBackData,
    )
}
assert set(PAYLOADS) == set(EventType), "every event type has exactly one payload model"
_KNOWN_TYPES = frozenset(t.value for t in EventType)


class _Event(BaseModel):
    run_id: str
    seq: int
    created_at: datetime | None = None


class RunStatusEvent(_Event):
    type: Literal[EventType.RUN_STATUS]
    data: RunStatusData


class MessageDeltaEvent(_Event):
    type: Literal[EventType.MESSAGE_DELTA]
    data: MessageDeltaData


class StreamResetEvent(_Event):
    type: Literal[EventType.STREAM_RESET]
    data: StreamResetData


class MessageCompletedEvent(_Event):
    type: Literal[EventType.MESSAGE_COMPLETED]
    data: MessageCompletedData


class ToolCallEvent(_Event):
    type: Literal[EventType.TOOL_CALL]
    data: ToolCallData


class ToolResultEvent(_Event):
    type: Literal[EventType.TOOL_RESULT]
    data: ToolResultData


class LlmUsageEvent(_Event):
    type: Literal[EventType.LLM_USAGE]
    data: LlmUsageData


class ErrorEvent(_Event):
    type: Literal[EventType.ERROR]
    data: ErrorData


class ToolApprovalRequestedEvent(_Event):
    type: Literal[EventType.TOOL_APPROVAL_REQUESTED]
    data: ToolWaitData


class ToolResultRequestedEvent(_Event):
    type: Literal[EventType.TOOL_RESULT_REQUESTED]
    data: ToolResultRequestedData


class ToolDecidedEvent(_Event):
    type: Literal[EventType.TOOL_DECIDED]
    data: ToolDecidedData


class ToolDecisionInvalidEvent(_Event):
    type: Literal[EventType.TOOL_DECISION_INVALID]
    data: ToolDecisionInvalidData


class BudgetExceededEvent(_Event):
    type: Literal[EventType.BUDGET_EXCEEDED]
    data: BudgetExceededData


class SubRunStartedEvent(_Event):
    type: Literal[EventType.SUBRUN_STARTED]
    data: SubRunStartedData


class SubRunWaitingEvent(_Event):
    type: Literal[EventType.SUBRUN_WAITING]
    data: SubRunWaitingData


class SubRunFinishedEvent(_Event):
    type: Literal[EventType.SUBRUN_FINISHED]
    data: SubRunFinishedData


class ContextCompactedEvent(_Event):
    type: Literal[EventType.CONTEXT_COMPACTED]
    data: ContextCompactedData


class ContextCompactionFailedEvent(_Event):
    type: Literal[EventType.CONTEXT_COMPACTION_FAILED]
    data: ContextCompactionFailedData


class SessionDeletedEvent(_Event):
    type: Literal[EventType.SESSION_DELETED]
    data: SessionDeletedData


class MessageInterruptedEvent(_Event):
    type: Literal[EventType.MESSAGE_INTERRUPTED]
    data: MessageInterruptedData


class RunRolledBackEvent(_Event):
    type: Literal[EventType.RUN_ROLLED_BACK]
    data: RunRolledBackData


class UnknownEvent(_Event):
    """An event of a type this code does not know (written by a newer version)."""

    type: str
    data: dict[str, Any] = Field(default_factory=dict)


Event = Annotated[
    RunStatusEvent
    | MessageDeltaEvent
    | StreamResetEvent
    | MessageCompletedEvent
    | ToolCallEvent
    | ToolResultEvent
    | LlmUsageEvent
    | ErrorEvent
    | ToolApprovalRequestedEvent
    | ToolResultRequestedEvent
    | ToolDecidedEvent
    | ToolDecisionInvalidEvent
    | BudgetExceededEvent
    | SubRunStartedEvent
    | SubRunWaitingEvent
    | SubRunFinishedEvent
    | ContextCompactedEvent
    | ContextCompactionFailedEvent
    | SessionDeletedEvent
    | MessageInterruptedEvent
    | RunRolledBackEvent,
    Field(discriminator="type"),
]
_EVENT: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(
    run_id: str, seq: int, type: str, data: dict[str, Any], created_at: datetime | None = None
) -> Event | UnknownEvent:
    """A stored event as its typed model (`.type`, `.data` a payload model), or UnknownEvent."""
    raw = {"run_id": run_id, "seq": seq, "type": type, "data": data, "created_at": created_at}
    if type not in _KNOWN_TYPES:
        return UnknownEvent.model_validate(raw)
    return _EVENT.validate_python(raw)


def payload(type: EventType | str, data: dict[str, Any]) -> EventData:
    """The payload model of one event's data."""
    return PAYLOADS[EventType(type)].model_validate(data)


def event_table() -> str:
    """The README's event table, made from the payload models."""
    lines = ["| type | data | meaning |", "|---|---|---|"]
    for event_type, model in PAYLOADS.items():
        fields = ", ".join(f"`{name}`" for name in model.model_fields)
        lines.append(f"| `{event_type.value}` | {fields} | {model.ABOUT} |")
    return "\n".join(lines)
