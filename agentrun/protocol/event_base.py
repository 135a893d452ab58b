"""The event log's type names and the base of every payload (agentrun/protocol/events.py has
the payloads, the typed events and the parser; features.py the payloads of later features)."""

from __future__ import annotations

import enum
from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class EventType(enum.StrEnum):
    RUN_STATUS = "run.status"
    MESSAGE_DELTA = "message.delta"
    STREAM_RESET = "stream.reset"
    MESSAGE_COMPLETED = "message.completed"
    TOOL_CALL = "tool.call"
    TOOL_RESULT = "tool.result"
    LLM_USAGE = "llm.usage"
    ERROR = "error"
    TOOL_APPROVAL_REQUESTED = "tool.approval_requested"
    TOOL_RESULT_REQUESTED = "tool.result_requested"
    TOOL_DECIDED = "tool.decided"
    TOOL_DECISION_INVALID = "tool.decision_invalid"
    BUDGET_EXCEEDED = "budget.exceeded"
    SUBRUN_STARTED = "subrun.started"
    SUBRUN_WAITING = "subrun.waiting"
    SUBRUN_FINISHED = "subrun.finished"
    CONTEXT_COMPACTED = "context.compacted"
    CONTEXT_COMPACTION_FAILED = "context.compaction_failed"
    SESSION_DELETED = "session.deleted"
    MESSAGE_INTERRUPTED = "message.interrupted"
    RUN_ROLLED_BACK = "run.rolled_back"


class EventData(BaseModel):
    """A payload. Unknown fields (from a newer writer) are kept, not refused."""

    model_config = ConfigDict(extra="allow")
    TYPE: ClassVar[EventType]
    ABOUT: ClassVar[str] = ""


class ToolWaitData(EventData):
    TYPE = EventType.TOOL_APPROVAL_REQUESTED
    ABOUT = (
        "a tool call waits for a person's decision (`decide_tool_call`); send "
        "`arguments_sha256` back to bind the decision to these arguments"
    )
    tool_call_id: str
    name: str
    arguments: str
    arguments_sha256: str
    turn: int
