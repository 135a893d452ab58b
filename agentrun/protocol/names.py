"""The names outside apps and running workflows depend on: the workflow type, its updates,
signals and queries, the activity names, the search-attribute keys and the error types a
refusal carries. Renaming any of them breaks clients or runs in flight: add, never rename.
"""

from __future__ import annotations

import enum

from temporalio.common import SearchAttributeKey

WORKFLOW_NAME = "agentrun.AgentRun"
NOTIFY_CHANNEL = "agentrun_events"
# One small workflow per webhook delivery (workflow id "webhook-<delivery id>"), started by the
# workers' dispatcher when NOTIFY on this channel says the outbox has new rows.
WEBHOOK_WORKFLOW_NAME = "agentrun.WebhookDelivery"
WEBHOOK_NOTIFY_CHANNEL = "agentrun_webhooks"
# Started by the retention schedule (agentrun/retention.py), one per task queue.
RETENTION_WORKFLOW_NAME = "agentrun.SessionRetention"
# One per session with queued messages (workflow id "queue#<session id>", contracts/queue.py):
# starts their runs in order; woken by the signal below (README "Sessions and double-texting").
SESSION_QUEUE_WORKFLOW_NAME = "agentrun.SessionQueue"
SESSION_QUEUE_WAKE_SIGNAL = "wake"


class Update(enum.StrEnum):
    DECIDE_TOOL_CALL = "decide_tool_call"
    SUBMIT_TOOL_RESULT = "submit_tool_result"
    CANCEL = "cancel"


class Signal(enum.StrEnum):
    TOOL_DECISION = "tool_decision"
    CANCEL = "cancel"
    # From a sub-agent's run to its parent: which of its calls wait for approval now.
    SUBRUN_WAITS = "subrun_waits"


class Query(enum.StrEnum):
    STATUS = "status"


class Activity(enum.StrEnum):
    """Registered activity names; recorded histories replay against them."""

    PREPARE_RUN = "agentrun.prepare_run"
    SET_STATUS = "agentrun.set_status"
    REQUEST_WAITS = "agentrun.request_waits"
    RECORD_DECISION = "agentrun.record_decision"
    APPEND_EVENT = "agentrun.append_event"
    MODEL_TURN = "agentrun.model_turn"
    EXECUTE_TOOL = "agentrun.execute_tool"
    RECORD_TOOL_OUTCOME = "agentrun.record_tool_outcome"
    REQUEST_CANCEL = "agentrun.request_cancel"
    RESUME_RUN = "agentrun.resume_run"
    DELIVER_WEBHOOK = "agentrun.deliver_webhook"
    RECORD_WEBHOOK_FAILURE = "agentrun.record_webhook_failure"
    LIST_MCP_TOOLS = "agentrun.list_mcp_tools"
    DELETE_IDLE_SESSIONS = "agentrun.delete_idle_sessions"
    PRUNE_WEBHOOK_DELIVERIES = "agentrun.prune_webhook_deliveries"
    ADVANCE_SESSION_QUEUE = "agentrun.advance_session_queue"


class SearchAttribute(enum.StrEnum):
    SESSION_ID = "AgentSessionId"
    RUN_STATUS = "AgentRunStatus"
    MODEL = "AgentModel"
    WAITING_APPROVAL = "AgentWaitingApproval"
    # Set when a run starts (never by the workflow): which tenant's run it is.
    TENANT = "AgentTenant"


# The memo under which a cancelled run keeps its result: a workflow closed as Canceled carries
# no result of its own.
MEMO_RESULT = "agentrun_result"

SA_SESSION_ID = SearchAttributeKey.for_keyword(SearchAttribute.SESSION_ID)
SA_RUN_STATUS = SearchAttributeKey.for_keyword(SearchAttribute.RUN_STATUS)
SA_MODEL = SearchAttributeKey.for_keyword(SearchAttribute.MODEL)
SA_WAITING_APPROVAL = SearchAttributeKey.for_bool(SearchAttribute.WAITING_APPROVAL)
SA_TENANT = SearchAttributeKey.for_keyword(SearchAttribute.TENANT)

SEARCH_ATTRIBUTE_KEYS: tuple[SearchAttributeKey, ...] = (
    SA_SESSION_ID,
    SA_RUN_STATUS,
    SA_MODEL,
    SA_WAITING_APPROVAL,
    SA_TENANT,
)


class ErrorType(enum.StrEnum):
    """`ApplicationError.type` of every refusal and failure a client can see; the typed client
    maps these to exception classes, never the message text."""

    # a decision (update decide_tool_call)
    UNKNOWN_TOOL_CALL = "UnknownToolCall"
    ALREADY_DECIDED = "AlreadyDecided"
    WRONG_WAIT_KIND = "WrongWaitKind"
    HASH_MISMATCH = "HashMismatch"
    SCHEMA_MISMATCH = "SchemaMismatch"
    INVALID_DECISION = "InvalidDecision"
    # a client-side result (update submit_tool_result)
    ALREADY_SUBMITTED = "AlreadySubmitted"
    RESULT_TOO_LARGE = "ResultTooLarge"
    INVALID_RESULT = "InvalidResult"
    # a run
    RUN_ENDED = "RunEnded"
    RUN_REFUSED = "RunRefused"
    RUN_FAILED = "RunFailed"
    RUN_OWNED = "RunOwned"
    SESSION_BUSY = "SessionBusy"
    SESSION_NOT_FOUND = "SessionNotFound"  # a session of another tenant
    INVALID_CONFIG = "InvalidConfig"
    INVALID_INPUT = "InvalidInput"
    APPROVAL_TIMEOUT = "ApprovalTimeout"
    # a run that reached its own or its session's budget (README "Cost and budgets")
    BUDGET_EXCEEDED = "BudgetExceeded"
    MCP_UNAVAILABLE = "McpUnavailable"  # an MCP server could not be reached (retried)
