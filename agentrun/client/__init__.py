"""The one typed way into agentrun runs: connect, start, get a handle, decide, submit a result,
cancel, read status, follow events and list runs. The CLI, the starter scripts, the tests and
the HTTP API use this package; nothing else builds update, signal or query names or list
queries.

    client = await AgentRunClient.connect(settings, store=repo)
    run = await client.start("list the files", config={"tools": ["ls"]})
    async for event in run.follow():          # typed protocol events (parse_event)
        if isinstance(event, ToolApprovalRequestedEvent):
            await run.decide(event.data.tool_call_id, Decision.APPROVE,
                             arguments_sha256=event.data.arguments_sha256)

Refusals are typed (agentrun.client.errors): a decision or result the run will not take raises
a `Refused` subclass chosen by the `ApplicationError.type` the workflow raised
(agentrun.protocol.names.ErrorType), never by its message. The functions that take a temporalio
`Client` first (start_run, decide, ...) are the same operations for callers that hold their own.

    calls     start, decide (update or signal), submit, cancel, status, result
    reading   follow a run's events (typed), list runs (one list query)
    handle    AgentRunClient and RunHandle
    executions  a run's chain of Temporal executions and their histories (continue-as-new)
    errors    the exception hierarchy and error_from, the one mapping to it
    queue     messages with a double-texting policy (if_busy): send, wait, cancel, defaults
"""

from __future__ import annotations

from agentrun.client.calls import (
    cancel_run,
    connect,
    decide,
    describe_run,
    new_id,
    run_result,
    run_status,
    signal_decision,
    start_run,
    submit_tool_result,
)
from agentrun.client.errors import (
    AgentRunError,
    AlreadyDecided,
    AlreadySubmitted,
    BudgetExceeded,
    DecisionRefused,
    HashMismatch,
    InvalidDecision,
    InvalidResult,
    Refused,
    ResultRefused,
    ResultTooLarge,
    RunEnded,
    RunFailed,
    RunNotFound,
    RunNotStarted,
    RunRefused,
    SchemaMismatch,
    SessionBusy,
    SessionNotFound,
    UnknownToolCall,
    WrongWaitKind,
    error_from,
)
from agentrun.client.executions import run_histories
from agentrun.client.handle import AgentRunClient, RunHandle
from agentrun.client.queue import (
    MessageNotStarted,
    MessageRefused,
    cancel_message,
    queued_messages,
    set_session_policy,
    wait_started,
)
from agentrun.client.reading import AnyEvent, RunSummary, follow, list_query, list_runs

__all__ = [
    "AgentRunClient",
    "AgentRunError",
    "AlreadyDecided",
    "AlreadySubmitted",
    "AnyEvent",
    "BudgetExceeded",
    "DecisionRefused",
    "HashMismatch",
    "InvalidDecision",
    "InvalidResult",
    "MessageNotStarted",
    "MessageRefused",
    "Refused",
    "ResultRefused",
    "ResultTooLarge",
    "RunEnded",
    "RunFailed",
    "RunHandle",
    "RunNotFound",
    "RunNotStarted",
    "RunRefused",
    "RunSummary",
    "SchemaMismatch",
    "SessionBusy",
    "SessionNotFound",
    "UnknownToolCall",
    "WrongWaitKind",
    "cancel_message",
    "cancel_run",
    "connect",
    "decide",
    "describe_run",
    "error_from",
    "follow",
    "list_query",
    "list_runs",
    "new_id",
    "queued_messages",
    "run_histories",
    "run_result",
    "run_status",
    "set_session_policy",
    "signal_decision",
    "start_run",
    "submit_tool_result",
    "wait_started",
]
