"""agentrun.client.errors: every refusal type the workflow raises maps to its exception class by
`ApplicationError.type`, never by the message; no server is started."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.service import RPCError, RPCStatusCode

from agentrun.client import (
    AgentRunError,
    AlreadyDecided,
    AlreadySubmitted,
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
    RunRefused,
    SchemaMismatch,
    UnknownToolCall,
    WrongWaitKind,
    error_from,
)
from agentrun.client.errors import REFUSALS
from agentrun.protocol.names import ErrorType

EXPECTED: dict[ErrorType, type[Refused]] = {
    ErrorType.UNKNOWN_TOOL_CALL: UnknownToolCall,
    ErrorType.WRONG_WAIT_KIND: WrongWaitKind,
    ErrorType.ALREADY_DECIDED: AlreadyDecided,
    ErrorType.HASH_MISMATCH: HashMismatch,
    ErrorType.SCHEMA_MISMATCH: SchemaMismatch,
    ErrorType.INVALID_DECISION: InvalidDecision,
    ErrorType.ALREADY_SUBMITTED: AlreadySubmitted,
    ErrorType.RESULT_TOO_LARGE: ResultTooLarge,
    ErrorType.INVALID_RESULT: InvalidResult,
}


def update_failed(error_type: str | None, message: str = "nope") -> WorkflowUpdateFailedError:
    return WorkflowUpdateFailedError(ApplicationError(message, type=error_type, non_retryable=True))


def test_every_refusal_type_has_its_class() -> None:
    assert REFUSALS == EXPECTED


@pytest.mark.parametrize("error_type", list(EXPECTED), ids=str)
def test_a_failed_update_maps_by_its_type(error_type: ErrorType) -> None:
    exc = update_failed(error_type.value, "some words that say nothing about the type")
    typed = error_from(exc, run_id="run-1")
    assert type(typed) is EXPECTED[error_type]
    assert isinstance(typed, Refused) and isinstance(typed, AgentRunError)
    assert typed.error_type == error_type.value and typed.run_id == "run-1"
    assert str(typed) == "some words that say nothing about the type"
    # Still what the SDK raised, for code written against it: `.cause` is the ApplicationError.
    assert isinstance(typed, WorkflowUpdateFailedError)
    assert isinstance(typed.cause, ApplicationError) and typed.cause.type == error_type.value


def test_the_bare_application_error_maps_the_same() -> None:
    cause = ApplicationError("x", type=ErrorType.HASH_MISMATCH.value)
    assert isinstance(error_from(cause), HashMismatch)


def test_the_message_never_decides_the_type() -> None:
    # An "already decided" message with another type is that other type.
    typed = error_from(update_failed(ErrorType.HASH_MISMATCH.value, "already decided (approve)"))
    assert type(typed) is HashMismatch
    typed = error_from(update_failed(None, "unknown tool call 'c'"), default=DecisionRefused)
    assert type(typed) is DecisionRefused


@pytest.mark.parametrize("default", [DecisionRefused, ResultRefused, Refused])
def test_an_unknown_type_maps_to_the_requests_base_class(default: type[Refused]) -> None:
    typed = error_from(update_failed("ValueError"), default=default)
    assert type(typed) is default and typed.error_type == "ValueError"


def test_hierarchy() -> None:
    for cls in (AlreadyDecided, HashMismatch, SchemaMismatch, InvalidDecision):
        assert issubclass(cls, DecisionRefused)
    for cls in (AlreadySubmitted, ResultTooLarge, InvalidResult):
        assert issubclass(cls, ResultRefused)
    for cls in (UnknownToolCall, WrongWaitKind, DecisionRefused, ResultRefused):
        assert issubclass(cls, Refused)
    for cls in (RunNotFound, RunEnded, RunFailed, Refused):
        assert issubclass(cls, AgentRunError)
    assert issubclass(RunRefused, RunFailed)


def test_run_ended_from_an_update() -> None:
    typed = error_from(update_failed(ErrorType.RUN_ENDED.value, "the run ended"), run_id="r")
    assert isinstance(typed, RunEnded) and typed.run_id == "r"


def test_rpc_not_found_is_run_not_found_and_other_rpc_errors_pass() -> None:
    missing = RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b"")
    typed = error_from(missing, run_id="r")
    assert isinstance(typed, RunNotFound) and typed.run_id == "r" and "no run 'r'" in str(typed)
    other = RPCError("unavailable", RPCStatusCode.UNAVAILABLE, b"")
    assert error_from(other, run_id="r") is other


def test_a_failed_run() -> None:
    refused = WorkflowFailureError(
        cause=ApplicationError("bad tool", type=ErrorType.RUN_REFUSED.value, non_retryable=True)
    )
    typed = error_from(refused, run_id="r")
    assert type(typed) is RunRefused and str(typed) == "bad tool"
    failed = WorkflowFailureError(cause=ApplicationError("timeout", type="RunFailed"))
    assert type(error_from(failed)) is RunFailed
    cancelled = WorkflowFailureError(cause=CancelledError("Workflow cancelled"))
    assert type(error_from(cancelled)) is RunFailed


def test_anything_else_passes_through() -> None:
    for exc in (ValueError("x"), WorkflowUpdateFailedError(CancelledError("gone"))):
        assert error_from(exc) is exc
    ended = RunEnded("r", "DONE", start=True)
    assert error_from(ended) is ended
    assert str(ended) == "run 'r' already ended (DONE); start a new run id"
