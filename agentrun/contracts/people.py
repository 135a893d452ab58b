"""What people and apps send a run (update and signal payloads) and what they get back
(recorded decisions, cancel answers, the status query)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from agentrun.contracts.run import Strict, Usage
from agentrun.protocol.statuses import Decision, RunStatus, WaitKind
from agentrun.text import check_text as _check_text


class ToolDecision(Strict):
    """Payload of the update decide_tool_call and the signal tool_decision."""

    tool_call_id: str = Field(min_length=1, max_length=200)
    decision: Decision
    arguments: dict[str, Any] | None = Field(
        default=None, description="The edited arguments, with approve_with_edits."
    )
    arguments_sha256: str | None = Field(
        default=None, description="The hash from tool.approval_requested, to bind the decision."
    )
    decided_by: str | None = Field(default=None, max_length=200)
    reason: str | None = Field(default=None, max_length=4_000)

    @field_validator("decided_by", "reason", "arguments")
    @classmethod
    def _storable(cls, value: Any, info: ValidationInfo) -> Any:
        return _check_text(value, info, always=True)


class RecordedDecision(BaseModel):
    """A decision as recorded: what decide_tool_call returns."""

    tool_call_id: str
    name: str
    decision: Decision
    arguments: str
    decided_by: str
    reason: str | None = None


class ToolResultSubmission(Strict):
    """Payload of the update submit_tool_result (a client-side tool's result)."""

    tool_call_id: str = Field(min_length=1, max_length=200)
    result: Any = None
    is_error: bool = False

    @field_validator("result")
    @classmethod
    def _storable(cls, value: Any, info: ValidationInfo) -> Any:
        return _check_text(value, info, always=True)


class CancelRequest(Strict):
    """Payload of the update and the signal cancel."""

    reason: str | None = Field(default=None, max_length=4_000)
    requested_by: str | None = Field(default=None, max_length=200)

    @field_validator("reason", "requested_by")
    @classmethod
    def _storable(cls, value: Any, info: ValidationInfo) -> Any:
        return _check_text(value, info, always=True)


class CancelAnswer(BaseModel):
    """What the update cancel answers."""

    status: RunStatus | str = Field(
        union_mode="left_to_right",
        description="The run's status; for a run whose workflow is gone, its Temporal "
        "execution status (COMPLETED, TERMINATED, ...).",
    )
    message: str


class PendingCall(BaseModel):
    tool_call_id: str
    name: str
    kind: WaitKind
    arguments: str
    arguments_sha256: str
    turn: int


class WaitingOn(BaseModel):
    """A sub-run (child, or deeper) whose tool calls wait for approval: decide them on that run
    (decide_tool_call on `run_id`)."""

    run_id: str
    agent: str = ""
    calls: list[PendingCall] = Field(default_factory=list)


class RunStatusView(BaseModel):
    """What the query status answers."""

    run_id: str
    status: RunStatus
    phase: str
    turn: int
    model: str
    pending: list[PendingCall] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    cancel_requested: bool = False
    waiting_on: list[WaitingOn] = Field(default_factory=list)
