"""The batch and display rules of workflows/rules.py (which calls run, what a call that is not
run records instead, what the Web UI shows), without a server."""

from __future__ import annotations

import json

from agentrun.contracts import (
    OutcomeKind,
    RecordedDecision,
    ToolCallRequest,
    ToolDecision,
    ToolInfo,
    ToolKind,
    ToolResultSubmission,
    WaitKind,
)
from agentrun.protocol.statuses import Decision, ToolApproval
from workflows import rules


def call(name: str, call_id: str, **arguments: object) -> ToolCallRequest:
    return ToolCallRequest(id=call_id, name=name, arguments=json.dumps(arguments))


def test_the_budget_runs_the_first_calls_and_skips_the_rest() -> None:
    calls = [call("calculator", f"c{i}") for i in range(3)]
    plan, used = rules.plan_batch(calls, {"calculator"}, limit=4, used=2)
    assert plan[:2] == [None, None] and used == 4
    assert plan[2] is not None and plan[2].kind == OutcomeKind.OVER_BUDGET
    assert plan[2].text == "error: not run: the run's limit of 4 tool calls was reached"


def test_a_tool_the_run_did_not_enable_is_never_run_and_spends_no_budget() -> None:
    plan, used = rules.plan_batch(
        [call("bash", "c1"), call("ls", "c2")], {"ls", "calculator"}, limit=1, used=0
    )
    assert plan[0] is not None and plan[0].kind == OutcomeKind.NOT_ENABLED
    assert plan[0].text == (
        "error: tool 'bash' is not enabled for this run; enabled tools: calculator, ls"
    )
    assert plan[1] is None and used == 1
    plan, _ = rules.plan_batch([call("bash", "c1")], set(), limit=5, used=0)
    assert plan[0] is not None and plan[0].text.endswith("enabled tools: none")


def test_what_a_call_waits_for() -> None:
    assert rules.wait_kind(None) is None
    assert rules.wait_kind(ToolInfo(name="ls")) is None
    asking = ToolInfo(name="bash", approval=ToolApproval.NEEDS_APPROVAL)
    assert rules.wait_kind(asking) == WaitKind.APPROVAL
    assert rules.wait_kind(ToolInfo(name="weather", kind=ToolKind.CLIENT)) == WaitKind.CLIENT_RESULT
    pending = rules.pending_call(call("bash", "c1", command="ls"), WaitKind.APPROVAL, turn=3)
    assert pending.arguments_sha256 == rules.arguments_sha256(pending.arguments)
    assert (pending.kind, pending.turn) == (WaitKind.APPROVAL, 3)


def test_decisions_become_arguments_or_outcomes() -> None:
    c = call("bash", "c1", command="rm -rf /")
    edits = ToolDecision(
        tool_call_id="c1", decision=Decision.APPROVE_WITH_EDITS, arguments={"command": "ls"}
    )
    assert json.loads(rules.decided_arguments(edits, c)) == {"command": "ls"}
    plain = ToolDecision(tool_call_id="c1", decision=Decision.APPROVE)
    assert rules.decided_arguments(plain, c) == c.arguments
    timeout = rules.timeout_rejection("c1")
    assert (timeout.decision, timeout.decided_by) == (Decision.REJECT, "timeout")
    recorded = RecordedDecision(
        tool_call_id="c1", name="bash", decision=Decision.REJECT, arguments="{}", decided_by="bob"
    )
    outcome = rules.rejected(recorded)
    assert outcome.kind == OutcomeKind.REJECTED and outcome.is_error
    assert outcome.text == "error: the call was rejected by bob"
    with_reason = rules.rejected(recorded.model_copy(update={"reason": "no"}))
    assert with_reason.text == "error: the call was rejected by bob: no"


def test_client_results_and_failures_become_outcomes() -> None:
    given = rules.client_result(ToolResultSubmission(tool_call_id="w", result={"a": 1}), None)
    assert (given.kind, given.text, given.is_error) == (
        OutcomeKind.CLIENT_RESULT,
        '{"a": 1}',
        False,
    )
    missing = rules.client_result(None, 2.5)
    assert (missing.kind, missing.text) == (
        OutcomeKind.NO_CLIENT_RESULT,
        "error: no result from the client within 2.5s",
    )
    failed = rules.failed(call("ls", "c1"), RuntimeError("disk gone"))
    assert (failed.kind, failed.text) == (OutcomeKind.FAILED, "error: ls failed: disk gone")
    assert rules.abandoned("the run failed: x").text == "cancelled: the run failed: x"


def test_what_the_web_ui_shows() -> None:
    assert rules.describe(call("bash", "c1", command="ls -la")) == "bash `ls -la`"
    assert rules.describe(call("ls", "c1", path=".")) == 'ls {"path": "."}'
    long = rules.describe(call("bash", "c1", command="x" * 500))
    assert len(long) == rules.DETAILS_MAX_CHARS and long.endswith("...")
    bash = rules.pending_call(call("bash", "c1", command="ls"), WaitKind.APPROVAL, 1)
    weather = rules.pending_call(call("weather", "w1"), WaitKind.CLIENT_RESULT, 1)
    waits = [rules.Wait(weather, None), rules.Wait(bash, None)]
    assert rules.waits_details(waits) == (
        "waiting for approval: bash `ls`\nwaiting for client result: weather {}"
    )
