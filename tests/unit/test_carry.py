"""The carry of a run that continues-as-new (workflows/carry.py), without a server: when it is
due, what is carried, what a restored state looks like, and the bounds that keep it small."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from agentrun.contracts import (
    MAX_TURNS_LIMIT,
    AgentConfig,
    CancelRequest,
    OpenedRun,
    RunCarry,
    StartRunInput,
    ToolDecision,
    ToolInfo,
    Usage,
)
from agentrun.protocol.statuses import RunStatus, ToolApproval
from workflows.carry import (
    MAX_CARRIED_EARLY_CHARS,
    MAX_CARRIED_SETTLED,
    continue_due,
    make_carry,
    restore,
)
from workflows.state import RunState

OPENED = OpenedRun(
    run_id="r",
    model="m",
    tools=[ToolInfo(name="bash", approval=ToolApproval.NEEDS_APPROVAL), ToolInfo(name="ls")],
)


def a_state(**fields: object) -> RunState:
    state = RunState()
    state._run_id = "r"
    state._opened = OPENED
    state._status = RunStatus.RUNNING
    for name, value in fields.items():
        setattr(state, f"_{name}", value)
    return state


@pytest.mark.parametrize(
    ("turns_here", "after", "suggested", "due"),
    [
        (0, 1, True, False),  # never before an execution's first turn
        (1, 1, False, True),
        (99, 100, False, False),
        (100, 100, False, True),
        (3, None, False, False),  # None: only when Temporal suggests it
        (3, None, True, True),
        (3, 100, True, True),
    ],
)
def test_continue_due(turns_here: int, after: int | None, suggested: bool, due: bool) -> None:
    assert continue_due(turns_here, after, suggested) is due


def test_a_restored_state_is_the_state_carried() -> None:
    early = ToolDecision(tool_call_id="later", decision="reject", decided_by="app")
    before = a_state(
        turn=42,
        tool_calls_used=17,
        usage=Usage(prompt_tokens=1000, completion_tokens=50, llm_calls=42, turns=42),
        early={"later": early},
    )
    before._book.settled["call_1"] = "approve by alice"
    carry = make_carry(before, execution=3)
    # Through the wire, as continue-as-new sends it.
    carry = RunCarry.model_validate_json(carry.model_dump_json())
    after = RunState()
    restore(after, carry)
    assert (after._turn, after._tool_calls_used, after._usage) == (42, 17, before._usage)
    assert after._opened == OPENED and after._model == "m"
    assert sorted(after._tools) == ["bash", "ls"]
    assert after._tools["bash"].approval == ToolApproval.NEEDS_APPROVAL
    assert after._status == RunStatus.RUNNING and after._phase == "running"
    assert after._early == {"later": early}
    assert after._book.known("call_1") and not after._waits
    assert after._cancel is None and carry.execution == 3


def test_a_decision_signalled_to_the_next_execution_before_it_took_over_is_kept() -> None:
    carried = ToolDecision(tool_call_id="a", decision="reject", decided_by="first")
    carry = make_carry(a_state(early={"a": carried}), 2)
    after = RunState()
    after._early = {
        "a": ToolDecision(tool_call_id="a", decision="reject", decided_by="second"),
        "b": ToolDecision(tool_call_id="b", decision="reject", decided_by="new"),
    }
    restore(after, carry)
    assert {k: d.decided_by for k, d in after._early.items()} == {"a": "first", "b": "new"}


def test_a_carried_cancel_cancels_the_next_execution_at_once() -> None:
    carry = make_carry(a_state(cancel=CancelRequest(reason="stop", requested_by="dan")), 2)
    after = RunState()
    restore(after, carry)
    with pytest.raises(asyncio.CancelledError, match="cancelled by dan: stop"):
        after._raise_if_cancelled()


def test_a_carry_keeps_the_latest_settled_waits_only() -> None:
    state = a_state()
    for n in range(MAX_CARRIED_SETTLED + 10):
        state._book.settled[f"call_{n}"] = "approve by x"
    settled = make_carry(state, 2).settled
    assert len(settled) == MAX_CARRIED_SETTLED
    assert "call_9" not in settled and f"call_{MAX_CARRIED_SETTLED + 9}" in settled


def test_early_decisions_are_carried_up_to_a_size() -> None:
    big = {"command": "x" * 20_000}
    early = {
        f"call_{n}": ToolDecision(
            tool_call_id=f"call_{n}", decision="approve_with_edits", arguments=big
        )
        for n in range(64)
    }
    carried = make_carry(a_state(early=early), 2).early
    assert 0 < len(carried) < 64
    assert list(carried) == list(early)[: len(carried)]  # the first ones, in order
    assert sum(len(d.model_dump_json()) for d in carried.values()) <= MAX_CARRIED_EARLY_CHARS


def test_a_run_continues_only_once_opened() -> None:
    with pytest.raises(RuntimeError, match="only after it was opened"):
        make_carry(a_state(opened=None), 2)


def test_the_config_bounds() -> None:
    assert AgentConfig(max_turns=MAX_TURNS_LIMIT).max_turns == 1_000
    with pytest.raises(ValidationError, match="less than or equal to 1000"):
        AgentConfig(max_turns=MAX_TURNS_LIMIT + 1)
    assert AgentConfig(continue_as_new_after_turns=None).continue_as_new_after_turns is None
    for bad in (0, -1, "often"):
        with pytest.raises(ValidationError, match="continue_as_new_after_turns"):
            AgentConfig(continue_as_new_after_turns=bad)  # type: ignore[arg-type]


def test_an_older_input_without_the_new_fields_still_decodes() -> None:
    old = '{"run_id": "r", "session_id": "s", "prompt": "p", "config": {"max_turns": 3}}'
    inp = StartRunInput.model_validate_json(old)
    assert inp.carry is None and inp.config.continue_as_new_after_turns == 100
    with pytest.raises(ValidationError, match="carry"):
        StartRunInput(run_id="r", session_id="s", prompt="p", carry={"turn": 1})  # type: ignore[arg-type]
