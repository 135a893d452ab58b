"""The HTTP API's bodies (agentrun.api): what a caller sends and what it gets back.

Requests are strict: an unknown field anywhere (the run's config and its client tools
included) is refused with its name (422), so a typo never silently changes what a run does.
Responses are tolerant, so a newer server may add fields an older client ignores. Errors are
RFC 9457 problem documents (`Problem`, media type application/problem+json).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from agentrun.contracts.run import ID_PATTERN, MAX_PROMPT_CHARS, AgentConfig, strict_validate
from agentrun.protocol.queue import IfBusy, MessageState, QueuedState
from agentrun.protocol.statuses import Decision, RunStatus, WaitKind
from agentrun.text import check_text

PROBLEM_MEDIA_TYPE = "application/problem+json"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- requests ----------------------------------------------------------------------------------


class StartRunRequest(_Request):
    """POST /v1/runs."""

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    session_id: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        description="Continue this session's conversation; a new session when unset.",
    )
    config: AgentConfig | None = Field(
        default=None, description="How the run behaves (AgentConfig); defaults when unset."
    )
    if_busy: IfBusy | None = Field(
        default=None,
        description="What to do if the session has an active run: reject (409), enqueue, "
        "interrupt or rollback; unset: the session's default (reject when it has none).",
    )

    @field_validator("config", mode="before")
    @classmethod
    def _strict_config(cls, value: Any) -> Any:
        # AgentConfig reads tolerantly (rolling deploys); a caller's config is made here, so an
        # unknown field anywhere in it is refused.
        if isinstance(value, dict):
            return strict_validate(AgentConfig, value)
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError("the prompt is empty")
        return check_text(value, info, always=True)  # type: ignore[no-any-return]


class DecisionRequest(_Request):
    """POST /v1/runs/{run_id}/tool-calls/{tool_call_id}/decision. Who decided is the API key's
    name, never a field of the body."""

    decision: Decision
    arguments: dict[str, Any] | None = Field(
        default=None, description="The edited arguments, with approve_with_edits."
    )
    arguments_sha256: str | None = Field(
        default=None,
        max_length=64,
        description="The hash from tool.approval_requested (or GET /v1/runs/{id}): the decision "
        "is refused (422) if the call's arguments are not the ones you saw.",
    )
    reason: str | None = Field(default=None, max_length=4_000)


class ToolResultRequest(_Request):
    """POST /v1/runs/{run_id}/tool-calls/{tool_call_id}/result (a client-side tool)."""

    result: Any = Field(description="Any JSON value; a string is passed on as it is.")
    is_error: bool = False


class SessionPolicyRequest(_Request):
    """PUT /v1/sessions/{session_id}/if-busy."""

    if_busy: IfBusy | None = Field(description="The session's default policy; null: reject.")


class SessionBudgetRequest(_Request):
    """PUT /v1/sessions/{session_id}/budget: a limit left out keeps its value, null clears it."""

    max_cost_usd: Annotated[Decimal, WithJsonSchema({"type": "string"})] | None = Field(
        default=None, description='US dollars as a decimal string ("2.50"); null: no limit.'
    )
    max_total_tokens: int | None = Field(
        default=None, description="Prompt + completion tokens of all its runs; null: no limit."
    )

    @field_validator("max_cost_usd", mode="before")
    @classmethod
    def _exact(cls, value: Any) -> Any:
        # A JSON number is a binary float: the budget is exact, so it comes as a string.
        if value is not None and not isinstance(value, str):
            raise ValueError('give max_cost_usd as a decimal string, e.g. "2.50"')
        return value

    @field_validator("max_total_tokens", mode="before")
    @classmethod
    def _whole(cls, value: Any) -> Any:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError("max_total_tokens is a whole number")
        return value


class CancelRunRequest(_Request):
    """POST /v1/runs/{run_id}/cancel (the body is optional)."""

    reason: str | None = Field(default=None, max_length=4_000)


# -- responses ---------------------------------------------------------------------------------


class Links(_Response):
    self: str
    events: str
    cancel: str


class StartRunResponse(_Response):
    run_id: str
    session_id: str
    status: RunStatus
    links: Links
    message_id: str | None = Field(
        default=None, description="With a policy: the queued message (cancel it by this id)."
    )
    if_busy: IfBusy | None = Field(default=None, description="The policy that applied.")
    ahead: int | None = Field(
        default=None, description="Runs that start before this one (the active one included)."
    )
    active_run_id: str | None = Field(
        default=None, description="The run that was active (interrupted, rolled back, waited for)."
    )


class UsageView(_Response):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_calls: int = 0
    tool_calls: int = 0
    turns: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal | None = Field(
        default=None,
        description="Exact US dollars (a JSON string) of the priced model calls; null: none.",
    )
    unpriced_calls: int = Field(
        default=0, description="Model calls with tokens but no known price (not in cost_usd)."
    )
    unmetered_calls: int = Field(
        default=0, description="Successful model calls whose endpoint reported no usage."
    )


class UsageRowView(_Response):
    """One group of GET /v1/usage: a model, a day, a session or a run id, and its figures."""

    key: str
    llm_calls: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    total_tokens: int
    cost_usd: Decimal | None
    unpriced_calls: int
    unpriced_models: list[str]
    unmetered_calls: int = Field(
        default=0, description="Successful calls whose endpoint reported no usage at all."
    )


class UsagePage(_Response):
    by: str
    session_id: str | None
    since: datetime | None
    rows: list[UsageRowView]
    total: UsageRowView


class SessionBudgetView(_Response):
    """GET/PUT /v1/sessions/{session_id}/budget."""

    session_id: str
    max_cost_usd: Decimal | None = Field(description="Exact US dollars (a string); null: none.")
    max_total_tokens: int | None = Field(description="null: no token limit.")
    used: UsageView = Field(description="What all the session's runs used so far.")
    used_total_tokens: int = Field(description="used.prompt_tokens + used.completion_tokens.")


class PendingCallView(_Response):
    tool_call_id: str
    name: str
    kind: WaitKind
    arguments: str = Field(description="The arguments as the model sent them (JSON text).")
    arguments_sha256: str
    turn: int


class SubRunView(_Response):
    """A sub-agent's run started by this run (README "Sub-agents")."""

    run_id: str
    agent: str = Field(description="The sub-agent's name (delegate_to_<agent>).")
    status: RunStatus


class WaitingOnView(_Response):
    """A sub-run (a child, or deeper) whose tool calls wait for approval: decide them on that
    run (POST /v1/runs/{run_id}/tool-calls/{tool_call_id}/decision)."""

    run_id: str
    agent: str = ""
    calls: list[PendingCallView] = Field(default_factory=list)


class RunSummaryView(_Response):
    run_id: str
    session_id: str
    status: RunStatus
    model: str
    created_at: datetime | None = None
    finished_at: datetime | None = None
    links: Links
    usage: UsageView = Field(default_factory=UsageView)
    parent_run_id: str | None = Field(default=None, description="A sub-run's parent run.")


class RunView(RunSummaryView):
    error: str | None = None
    final_text: str | None = None
    updated_at: datetime | None = None
    last_event_seq: int = 0
    pending: list[PendingCallView] = Field(default_factory=list)
    children: list[SubRunView] = Field(
        default_factory=list, description="The sub-runs it started, oldest first."
    )
    waiting_on: list[WaitingOnView] = Field(
        default_factory=list,
        description="Sub-runs whose approvals it waits on (live runs; empty once it ended).",
    )


class RunPage(_Response):
    runs: list[RunSummaryView]
    next_cursor: str | None = Field(
        default=None, description="Pass as ?cursor= for the next (older) page; null at the end."
    )


class EventView(_Response):
    seq: int
    type: str
    data: dict[str, Any]
    created_at: datetime | None = None


class EventPage(_Response):
    """GET /v1/runs/{id}/events with Accept: application/json."""

    events: list[EventView]
    next_after: int = Field(description="Pass as ?after= for the next page.")
    ended: bool = Field(description="The run has ended and every one of its events was read.")
    status: RunStatus | None = Field(
        default=None,
        description="QUEUED while the run's message waits in its session's queue (no events "
        "yet: poll again); null otherwise.",
    )


class DecisionView(_Response):
    tool_call_id: str
    name: str
    decision: Decision
    arguments: str
    decided_by: str
    reason: str | None = None


class ToolResultView(_Response):
    tool_call_id: str
    status: str = Field(description="accepted")


class CancelView(_Response):
    run_id: str
    status: str = Field(description="The run's status once it stopped (CANCELED, or how it ended).")
    message: str


class ToolCallView(_Response):
    tool_call_id: str
    name: str
    arguments: str
    status: str
    decision: Decision | None = None
    decided_by: str | None = None
    decision_reason: str | None = None
    decided_at: datetime | None = None
    decided_arguments: str | None = None
    started_at: datetime | None = Field(default=None, description="When the tool started.")
    finished_at: datetime | None = Field(default=None, description="When its result came.")
    result: str | None = None
    is_error: bool = False


class MessageView(_Response):
    id: int
    run_id: str
    turn: int
    role: str
    content: str | None = None
    tool_call_id: str | None = None
    name: str | None = None
    created_at: datetime | None = None
    state: MessageState | None = Field(
        default=None, description="interrupted, rolled_back; null: an ordinary message."
    )
    kind: str = Field(
        default="message",
        description="message, or summary: a compaction summary that later contexts send "
        "instead of the session's messages up to covers_to_id (those stay in the record).",
    )
    covers_to_id: int | None = Field(
        default=None, description="A summary's last covered message id (null otherwise)."
    )
    tool_calls: list[ToolCallView] = Field(
        default_factory=list, description="An assistant message's calls, decisions included."
    )


class SessionSummaryView(_Response):
    session_id: str
    title: str | None = Field(default=None, description="The start of its first prompt.")
    created_at: datetime | None = None
    active_run_id: str | None = None


class SessionPage(_Response):
    sessions: list[SessionSummaryView]
    next_cursor: str | None = Field(
        default=None, description="Pass as ?cursor= for the next (older) page; null at the end."
    )


class TranscriptPage(_Response):
    session_id: str
    messages: list[MessageView] = Field(description="Oldest first.")
    next_before: int | None = Field(
        default=None, description="Pass as ?before= for the older messages; null at the start."
    )


class QueuedMessageView(_Response):
    message_id: str
    run_id: str = Field(description="The run it starts as (no run exists before it starts).")
    session_id: str
    position: int
    if_busy: IfBusy
    state: QueuedState
    preempt: bool = False
    supersedes_run_id: str | None = None
    reason: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    cancelled_at: datetime | None = None


class QueuePage(_Response):
    session_id: str
    if_busy: IfBusy | None = Field(default=None, description="The session's default policy.")
    messages: list[QueuedMessageView] = Field(description="In the order their runs start.")


class Health(_Response):
    status: str


class Readiness(_Response):
    status: str
    checks: dict[str, str]


class Problem(_Response):
    """An RFC 9457 problem document; some carry more members (run_id, active_run_id, errors)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
