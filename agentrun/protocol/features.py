"""Payloads of the event types the second-stage features added: budgets, sub-runs, context
compaction, deleted sessions, double-texting (the vocabulary is agentrun/protocol/events.py)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from agentrun.protocol.event_base import EventData, EventType, ToolWaitData


class BudgetExceededData(EventData):
    TYPE = EventType.BUDGET_EXCEEDED
    ABOUT = (
        "the run reached a budget and stops (FAILED, error type BudgetExceeded) before its "
        "next model turn or tool batch: `budget` run or session, `limit` max_cost_usd or "
        "max_total_tokens, the `limit_value` and the `used` figure (decimal strings), and the "
        "run's and (for a session budget) the session's `cost_usd` and `total_tokens` so far"
    )
    budget: str
    limit: str
    limit_value: str
    used: str
    turn: int
    before: str = Field(description="`model_turn` or `tool_batch`: what did not happen.")
    run_cost_usd: str | None = None
    run_total_tokens: int = 0
    session_cost_usd: str | None = None
    session_total_tokens: int | None = None
    unpriced_calls: int = 0
    unmetered_calls: int = 0


class SubRunStartedData(EventData):
    TYPE = EventType.SUBRUN_STARTED
    ABOUT = "a `delegate_to_<agent>` call started the child run `subrun_id` (its own event log)"
    tool_call_id: str
    agent: str
    subrun_id: str
    depth: int


class SubRunWaitingData(ToolWaitData):
    TYPE = EventType.SUBRUN_WAITING
    ABOUT = (
        "waiting on sub-run `subrun_id` for approval of `name` (`tool_call_id`): decide it on "
        "that run (`decide_tool_call`)"
    )
    subrun_id: str


class SubRunFinishedData(EventData):
    TYPE = EventType.SUBRUN_FINISHED
    ABOUT = "the child run `subrun_id` ended (`status`; `error` says why it gave no answer)"
    tool_call_id: str
    agent: str
    subrun_id: str
    status: str
    error: str | None = None


class ContextCompactedData(EventData):
    TYPE = EventType.CONTEXT_COMPACTED
    ABOUT = (
        "the session's oldest messages (up to message id `covers_to_id`, `messages` of them) "
        "were summarised by `model` before `turn`; later turns send the summary instead"
    )
    turn: int
    covers_to_id: int
    messages: int
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ContextCompactionFailedData(EventData):
    TYPE = EventType.CONTEXT_COMPACTION_FAILED
    ABOUT = "summarising before `turn` failed (`error`); that turn's context is trimmed instead"
    turn: int
    attempt: int
    error: str


class SessionDeletedData(EventData):
    TYPE = EventType.SESSION_DELETED
    ABOUT = (
        "the tombstone: the run's session was deleted at `deleted_at`; its text is erased, "
        "usage figures are kept"
    )
    session_id: str
    deleted_at: datetime
    by: str | None = None


class MessageInterruptedData(EventData):
    TYPE = EventType.MESSAGE_INTERRUPTED
    ABOUT = (
        "a newer message interrupted the run while turn `turn` streamed: its partial answer "
        "(`text_chars` characters) is kept in the conversation as an assistant message marked "
        "interrupted"
    )
    turn: int
    text_chars: int


class RunRolledBackData(EventData):
    TYPE = EventType.RUN_ROLLED_BACK
    ABOUT = (
        "a newer message (`message_id`, its run `by_run_id`) rolled this run back: its "
        "`messages` messages stay in the record, marked rolled_back, and no model sees them"
    )
    message_id: str
    by_run_id: str
    messages: int
