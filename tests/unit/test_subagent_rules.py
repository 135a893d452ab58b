"""Sub-agents' pure rules (no server): config validation, derived child ids and configs, the
delegate call's arguments, and the delegate tools a run offers (agentrun.contracts.subagents,
activities.subagent_tools)."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError

from activities.policy import InvalidConfig
from activities.subagent_tools import delegate_tools, run_tools
from activities.tool_schemas import tool_schemas
from activities.tools import default_registry
from agentrun.contracts import (
    ID_PATTERN,
    AgentConfig,
    ClientTool,
    RunStatusView,
    StartRunInput,
    ToolApproval,
    ToolKind,
    strict_validate,
)
from agentrun.contracts.subagents import (
    SubRunWaits,
    child_config,
    child_run_id,
    parse_task,
    strip_delegates,
)

RESEARCHER = {"system_prompt": "research", "tools": ["calculator"]}


def config(**fields: object) -> AgentConfig:
    return strict_validate(AgentConfig, fields)


# -- config --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"subagents": {"a b": {}}}, "sub-agent name 'a b' must be 1-48"),
        ({"subagents": {"x" * 49: {}}}, "must be 1-48"),
        ({"subagents": {"a": {"subagents": ["b"]}}}, "names unknown sub-agent(s): b"),
        ({"tools": ["delegate_to_a"], "subagents": {"a": {}}}, "delegate_to_a clash"),
        ({"subagents": {"a": {"bogus": 1}}}, "subagents.a.bogus"),
        ({"subagents": {"a": {"max_turns": 0}}}, "max_turns"),
        ({"subagents": {"a": {"system_prompt": "nul\x00"}}}, "NUL"),
        ({"max_depth": 5}, "max_depth"),
        ({"max_fanout": 0}, "max_fanout"),
    ],
)
def test_bad_subagent_configs_are_refused_with_the_reason(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        config(**fields)
    assert message in str(info.value)


def test_a_client_tool_may_not_take_a_delegate_name() -> None:
    with pytest.raises(ValidationError, match="delegate_to_a clash"):
        AgentConfig(client_tools=[ClientTool(name="delegate_to_a")], subagents={"a": {}})


def test_a_newer_field_in_a_subagent_is_ignored_where_it_is_read() -> None:
    raw = json.dumps({"subagents": {"a": {"from_the_future": 1, "tools": []}}})
    read = AgentConfig.model_validate_json(raw)
    assert read.subagents is not None and read.subagents["a"].tools == []


# -- the child's id, session and config -------------------------------------------------------


def test_the_child_id_is_readable_and_derived_from_parent_agent_and_call() -> None:
    assert child_run_id("run-1", "researcher", "call_ab-1") == "run-1.researcher.call_ab-1"
    assert child_run_id("run-1", "researcher", "call_1") != child_run_id(
        "run-1", "researcher", "call_2"
    )
    assert child_run_id("run-1", "a", "c") != child_run_id("run-1", "b", "c")


@pytest.mark.parametrize(
    ("parent", "call"),
    [
        ("run-1", "call with spaces"),
        ("run-1", "call/slash"),
        ("r" * 200, "call_1"),
        ("run-1", "c" * 150),
    ],
)
def test_a_child_id_that_would_not_fit_is_hashed_and_still_valid(parent: str, call: str) -> None:
    child = child_run_id(parent, "researcher", call)
    assert re.match(ID_PATTERN, child) and len(child) <= 200
    assert child == child_run_id(parent, "researcher", call)  # deterministic
    assert child != child_run_id(parent, "researcher", call + "x")


def test_the_child_config_is_the_subagents_over_the_parents() -> None:
    parent = config(
        model="big",
        tools=["ls", "bash"],
        max_turns=5,
        approval="require_all",
        approval_overrides={"bash": "needs_approval", "get_weather": "needs_approval"},
        client_tools=[{"name": "get_weather"}],
        approval_timeout_s=30,
        subagents={"researcher": RESEARCHER, "writer": {"model": "small", "max_turns": 2}},
    )
    child = child_config(parent, "researcher", "/ws/parent", 1)
    assert (child.model, child.tools, child.max_turns, child.system_prompt) == (
        "big",
        ["calculator"],
        5,
        "research",
    )
    assert child.workspace == "/ws/parent" and child.approval == "require_all"
    assert child.approval_timeout_s == 30 and child.client_tools == []
    # The parent's overrides for tools the child lacks (and its client tools) are left out.
    assert child.approval_overrides == {} and child.subagents is None
    writer = child_config(parent, "writer", None, 1)
    assert (writer.model, writer.max_turns, writer.tools) == ("small", 2, ["ls", "bash"])
    assert writer.approval_overrides == {"bash": ToolApproval.NEEDS_APPROVAL}


def test_nested_subagents_only_above_max_depth() -> None:
    subagents = {
        "planner": {"subagents": ["coder"]},
        "coder": {"subagents": ["tester"]},
        "tester": {},
    }
    deep = config(max_depth=3, subagents=subagents)
    planner = child_config(deep, "planner", None, 1)
    assert sorted(planner.subagents or {}) == ["coder", "tester"]  # what it can reach
    assert child_config(deep, "planner", None, 3).subagents is None
    assert child_config(config(subagents=subagents), "planner", None, 1).subagents is None


def test_a_child_input_keeps_the_parents_tenant_and_validates_the_task() -> None:
    parent = config(subagents={"a": {}})
    inp = StartRunInput(
        run_id="r.a.c", session_id="r.a.c", prompt="t", config=child_config(parent, "a", None, 1)
    )
    assert inp.parent is None  # only a parent's workflow sets it
    with pytest.raises(ValidationError, match="NUL"):
        StartRunInput(run_id="r", session_id="r", prompt="bad\x00", config=parent)


# -- the delegate call ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ("{", "not valid JSON"),
        ("[]", "must be"),
        ('{"task": ""}', "must be"),
        ('{"task": 3}', "must be"),
        ('{"task": "x", "urgent": true}', "unknown argument(s): urgent"),
        (json.dumps({"task": "x" * 100_001}), "the limit is 100000"),
    ],
)
def test_bad_delegate_arguments_say_why(arguments: str, problem: str) -> None:
    task, why = parse_task(arguments)
    assert task is None and why is not None and problem in why


def test_a_task_is_taken_as_it_is() -> None:
    assert parse_task('{"task": "sum 1..10"}') == ("sum 1..10", None)


# -- at open: the delegate tools ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "approval"),
    [
        ({}, "auto"),
        ({"approval": "require_all"}, "needs_approval"),
        ({"approval": "allow_safe"}, "needs_approval"),
        ({"approval": "allow_listed"}, "needs_approval"),
        ({"approval": "allow_listed", "approval_allow": ["delegate_to_a"]}, "auto"),
        ({"approval_overrides": {"delegate_to_a": "needs_approval"}}, "needs_approval"),
    ],
)
def test_delegate_tools_follow_the_runs_approval(fields: dict[str, object], approval: str) -> None:
    cfg = config(tools=["calculator"], subagents={"a": RESEARCHER}, **fields)
    infos = {t.name: t for t in run_tools(default_registry(), cfg, {})}
    assert set(infos) == {"calculator", "delegate_to_a"}
    delegate = infos["delegate_to_a"]
    assert (delegate.kind, delegate.approval) == (ToolKind.SUBAGENT, approval)
    assert delegate.parameters["required"] == ["task"]


def test_a_subagent_the_worker_would_refuse_refuses_the_parent_at_open() -> None:
    registry = default_registry()
    with pytest.raises(InvalidConfig, match="sub-agent 'a': unknown tool"):
        delegate_tools(registry, config(subagents={"a": {"tools": ["nosuch"]}}), {})
    loosen = config(subagents={"a": {"tools": ["bash"], "approval": "skip_all"}})
    with pytest.raises(InvalidConfig, match=r"sub-agent 'a'.*would run bash without approval"):
        delegate_tools(registry, loosen, {"bash": "needs_approval"})
    assert delegate_tools(registry, config(), {}) == []


def test_the_model_is_offered_the_delegate_schema() -> None:
    cfg = config(tools=[], subagents={"a": {"description": "finds facts"}})
    (schema,) = tool_schemas(default_registry(), ["delegate_to_a"], cfg)
    assert schema["function"]["name"] == "delegate_to_a"
    assert "finds facts" in schema["function"]["description"]
    assert (
        strip_delegates(
            config(subagents={"a": {}}, approval_allow=["delegate_to_a"])
        ).approval_allow
        == []
    )


def test_the_status_view_and_the_signal_payload_read_tolerantly() -> None:
    view = RunStatusView.model_validate_json(
        '{"run_id": "r", "status": "RUNNING", "phase": "tools", "turn": 1, "model": "m"}'
    )
    assert view.waiting_on == []
    notice = SubRunWaits.model_validate_json('{"run_id": "c", "via": "c", "new": 1}')
    assert notice.calls == []


def test_a_child_gets_what_is_left_of_the_parents_budget() -> None:
    from decimal import Decimal

    from agentrun.contracts import Usage
    from agentrun.contracts.subagents import child_within_budget

    parent = config(max_cost_usd="1.00", max_total_tokens=1000, subagents={"a": {}})
    used = Usage(prompt_tokens=300, completion_tokens=100, cost_usd=Decimal("0.25"))
    child, why = child_within_budget(child_config(parent, "a", None, 1), parent, used)
    assert child is not None and why == ""
    assert (child.max_cost_usd, child.max_total_tokens) == (Decimal("0.75"), 600)
    spent = Usage(prompt_tokens=1000, cost_usd=Decimal("0.25"))
    child, why = child_within_budget(child_config(parent, "a", None, 1), parent, spent)
    assert child is None and "max_total_tokens 1000 is spent" in why
    free = config(subagents={"a": {}})
    child, _ = child_within_budget(child_config(free, "a", None, 1), free, used)
    assert child is not None and child.max_cost_usd is None and child.max_total_tokens is None


def test_a_continued_run_keeps_what_its_sub_runs_used() -> None:
    from agentrun.contracts import OpenedRun, RunCarry, Usage
    from workflows.carry import make_carry, restore
    from workflows.state import RunState

    before = RunState()
    before._opened = OpenedRun(run_id="r", model="m")
    before._subrun_usage = Usage(prompt_tokens=7, llm_calls=1)
    carry = RunCarry.model_validate_json(make_carry(before, execution=2).model_dump_json())
    after = RunState()
    restore(after, carry)
    assert after._subrun_usage == before._subrun_usage


def test_a_child_uses_the_parents_mcp_servers_unless_its_own_are_named() -> None:
    parent = config(
        tools=[],
        mcp_servers=["notes", "search"],
        approval_overrides={"notes__add": "needs_approval", "search__find": "needs_approval"},
        subagents={"a": {}, "b": {"mcp_servers": [{"server": "search", "tools": ["find"]}]}},
    )
    a = child_config(parent, "a", None, 1)
    assert [c.server for c in a.mcp_servers or []] == ["notes", "search"]
    assert sorted(a.approval_overrides) == ["notes__add", "search__find"]
    b = child_config(parent, "b", None, 1)
    assert [(c.server, c.tools) for c in b.mcp_servers or []] == [("search", ["find"])]
    assert list(b.approval_overrides) == ["search__find"]


def test_only_runs_under_a_child_descend_from_it() -> None:
    from agentrun.contracts.subagents import child_run_id, descends_from

    child = child_run_id("parent", "researcher", "call_1")
    grandchild = child_run_id(child, "helper", "call_9")
    hashed = child_run_id(child, "helper", "call with spaces")
    assert descends_from(child, child) and descends_from(grandchild, child)
    assert descends_from(hashed, child) and grandchild != hashed
    assert not descends_from("parent", child)  # the parent itself
    assert not descends_from(child_run_id("parent", "researcher", "call_2"), child)  # a sibling
    assert not descends_from(child + "x.y", child)  # a mere prefix of the id is not enough
    assert not descends_from("someone-else.researcher.call_1", child)
    long_parent = "p" * 200
    long_child = child_run_id(long_parent, "researcher", "call_1")
    assert descends_from(child_run_id(long_child, "helper", "c"), long_child)
    assert not descends_from("q" * 150 + ".x", long_child)
