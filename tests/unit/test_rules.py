"""The decision and result rules of workflows/rules.py, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from agentrun.contracts import RESULT_CAP, PendingCall, ToolDecision, ToolInfo, ToolResultSubmission
from agentrun.protocol.names import ErrorType
from workflows.rules import Wait, Waits, arguments_sha256, early_approval_refusal

BASH_SCHEMA = {
    "type": "object",
    "properties": {"command": {"type": "string"}, "timeout_s": {"type": "number"}},
    "required": ["command"],
    "additionalProperties": False,
}
ARGS = '{"command": "ls"}'


def _wait(call_id: str, kind: str = "approval") -> Wait:
    return Wait(
        PendingCall(
            tool_call_id=call_id,
            name="bash",
            kind=kind,  # type: ignore[arg-type]
            arguments=ARGS,
            arguments_sha256=arguments_sha256(ARGS),
            turn=1,
        ),
        ToolInfo(name="bash", approval="needs_approval", parameters=BASH_SCHEMA),
    )


@pytest.fixture
def book() -> Waits:
    waits = Waits(run_id="run-1")
    waits.add(_wait("c1"))
    waits.add(_wait("c2", kind="client_result"))
    return waits


def _decide(call_id: str = "c1", decision: str = "approve", **kw: Any) -> ToolDecision:
    return ToolDecision(tool_call_id=call_id, decision=decision, **kw)  # type: ignore[arg-type]


def test_a_plain_approval_with_the_right_hash_is_taken(book: Waits) -> None:
    assert book.check_decision(_decide(arguments_sha256=arguments_sha256(ARGS))) is None
    assert book.check_decision(_decide(decision="reject", reason="no")) is None


@pytest.mark.parametrize(
    ("decision", "expected"),
    [
        (_decide("nope"), ErrorType.UNKNOWN_TOOL_CALL),
        (_decide("c2"), ErrorType.WRONG_WAIT_KIND),
        (_decide(arguments_sha256="0" * 64), ErrorType.HASH_MISMATCH),
        (_decide(decision="approve_with_edits"), ErrorType.INVALID_DECISION),
        (_decide(arguments={"command": "ls -la"}), ErrorType.INVALID_DECISION),
        (
            _decide(decision="approve_with_edits", arguments={"cmd": "ls"}),
            ErrorType.SCHEMA_MISMATCH,
        ),
        (
            _decide(decision="approve_with_edits", arguments={"command": 3}),
            ErrorType.SCHEMA_MISMATCH,
        ),
    ],
    ids=["unknown", "wrong-kind", "hash", "edits-missing", "args-without-edits", "extra", "type"],
)
def test_refused_decisions_say_why_by_type(
    book: Waits, decision: ToolDecision, expected: ErrorType
) -> None:
    refusal = book.check_decision(decision)
    assert refusal is not None and refusal.type == expected, refusal


def test_valid_edits_are_taken(book: Waits) -> None:
    edited = _decide(decision="approve_with_edits", arguments={"command": "ls -la"})
    assert book.check_decision(edited) is None


def test_a_second_decision_is_already_decided_before_and_after_settling(book: Waits) -> None:
    wait = book.open["c1"]
    wait.decision = _decide()
    second = book.check_decision(_decide(decision="reject"))
    assert second is not None and second.type == ErrorType.ALREADY_DECIDED
    book.settle(wait, "approve by ann")
    late = book.check_decision(_decide())
    assert late is not None and late.type == ErrorType.ALREADY_DECIDED
    assert "approve by ann" in late.message
    assert book.known("c1") and not book.known("c3")


def test_client_results(book: Waits) -> None:
    ok = ToolResultSubmission(tool_call_id="c2", result={"sky": "blue"})
    assert book.check_result(ok, check_size=True) is None
    cases = {
        "nope": ErrorType.UNKNOWN_TOOL_CALL,
        "c1": ErrorType.WRONG_WAIT_KIND,
    }
    for call_id, expected in cases.items():
        refusal = book.check_result(ToolResultSubmission(tool_call_id=call_id), check_size=True)
        assert refusal is not None and refusal.type == expected
    big = ToolResultSubmission(tool_call_id="c2", result="x" * (RESULT_CAP + 1))
    too_large = book.check_result(big, check_size=True)
    assert too_large is not None and too_large.type == ErrorType.RESULT_TOO_LARGE
    # Replay never checks the size: a result taken before the cap existed stays taken.
    assert book.check_result(big, check_size=False) is None
    book.open["c2"].result = ok
    again = book.check_result(ok, check_size=True)
    assert again is not None and again.type == ErrorType.ALREADY_SUBMITTED


def test_an_early_approval_needs_the_hash_but_an_early_reject_does_not() -> None:
    refusal = early_approval_refusal(_decide())
    assert refusal is not None and refusal.type == ErrorType.HASH_MISMATCH
    assert early_approval_refusal(_decide(arguments_sha256=arguments_sha256(ARGS))) is None
    assert early_approval_refusal(_decide(decision="reject")) is None
