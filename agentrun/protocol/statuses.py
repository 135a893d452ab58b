"""Every status and kind word of the contract, as enums.

The workflow, the store, the CLI and the search attributes use these; their values are the
strings on the wire and in the database, so they never change (add, never rename).
"""

from __future__ import annotations

import enum


class RunStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    WAITING_APPROVAL = "WAITING_APPROVAL"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_RUN_STATUSES

    @property
    def rank(self) -> int:
        # RUNNING and WAITING_APPROVAL share a rank: a run goes back and forth between them.
        return {"QUEUED": 0, "RUNNING": 1, "WAITING_APPROVAL": 1}.get(self.value, 2)


TERMINAL_RUN_STATUSES = frozenset({RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELED})


class ToolCallStatus(enum.StrEnum):
    PENDING = "pending"
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    ERROR = "error"

    @property
    def rank(self) -> int:
        # approved and rejected are decisions, not ends: a result (or an error result saying
        # the call was rejected) still follows and finishes the call.
        return {
            "pending": 0,
            "pending_approval": 1,
            "approved": 2,
            "rejected": 2,
            "running": 3,
        }.get(self.value, 4)

    @property
    def terminal(self) -> bool:
        return self.rank == 4


class Decision(enum.StrEnum):
    """What a person decides on a tool call that waits for approval."""

    APPROVE = "approve"
    APPROVE_WITH_EDITS = "approve_with_edits"
    REJECT = "reject"


class ToolApproval(enum.StrEnum):
    """A tool's resolved policy for one run."""

    AUTO = "auto"
    NEEDS_APPROVAL = "needs_approval"


class ApprovalPreset(enum.StrEnum):
    TOOL_DEFAULT = "tool_default"
    REQUIRE_ALL = "require_all"
    ALLOW_SAFE = "allow_safe"
    ALLOW_LISTED = "allow_listed"
    SKIP_ALL = "skip_all"


class ToolKind(enum.StrEnum):
    SERVER = "server"
    CLIENT = "client"
    SUBAGENT = "subagent"  # delegate_to_<name>: runs as a child run (README Sub-agents)


class WaitKind(enum.StrEnum):
    """What a pending tool call waits for."""

    APPROVAL = "approval"
    CLIENT_RESULT = "client_result"


class LlmCallStatus(enum.StrEnum):
    """An llm_calls row: how one model attempt ended."""

    OK = "ok"
    ERROR = "error"
    # The attempt left no record (its worker died, or it timed out); a later one wrote this.
    LOST = "lost"
    # The database failed before the model was called: spends none of the turn's model budget.
    DB_ERROR = "db_error"
    # The run was cancelled while this attempt streamed: its text so far stays in the event log.
    CANCELED = "canceled"


class Scope(enum.StrEnum):
    """What an HTTP API key may do. An app can hold a key that starts runs (write) but cannot
    approve its own tool calls (approve)."""

    READ = "read"  # list, get, follow
    WRITE = "write"  # start, cancel, submit client-side results
    APPROVE = "approve"  # decide tool calls


class WebhookDeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
