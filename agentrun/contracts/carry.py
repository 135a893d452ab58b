"""What a run's next execution needs of the one before when it continues-as-new: the carry.

A run's workflow continues-as-new at a turn boundary (workflows/carry.py), and its next
execution (same workflow id: the run id) starts from StartRunInput.carry instead of opening the
run again. Only the workflow makes a carry; a workflow started with one by anyone else is
refused (it is not a continued execution).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from agentrun.contracts.people import CancelRequest, ToolDecision
from agentrun.contracts.run import Usage
from agentrun.contracts.steps import OpenedRun
from agentrun.protocol.statuses import RunStatus


class RunCarry(BaseModel):
    """The state a continued execution takes over. Fields are only added, as optional."""

    opened: OpenedRun = Field(description="What the run's open recorded, whole.")
    turn: int = Field(ge=0, description="The last model turn taken.")
    tool_calls_used: int = Field(default=0, ge=0)
    usage: Usage = Field(default_factory=Usage)
    subrun_usage: Usage = Field(
        default_factory=Usage,
        description="What the run's sub-runs used (in `usage` too), added to the run's own "
        "record in its result.",
    )
    status: RunStatus = RunStatus.RUNNING
    early: dict[str, ToolDecision] = Field(
        default_factory=dict,
        description="Decisions signalled before their call existed, kept until it does.",
    )
    settled: dict[str, str] = Field(
        default_factory=dict,
        description="How the latest settled waits ended (tool call id -> how), so a late "
        "second decision is still refused as already decided.",
    )
    cancel: CancelRequest | None = Field(
        default=None,
        description="A cancel requested before the boundary: the next execution ends the run "
        "as cancelled at once.",
    )
    execution: int = Field(
        default=2,
        ge=2,
        description="The number of the execution that takes this carry over (the run's first "
        "continue-as-new makes execution 2).",
    )
