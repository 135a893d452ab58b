"""Sub-agents as child runs (README Sub-agents), on a real Temporal dev server, a real
PostgreSQL and the offline model: a parent's `delegate_to_<name>` call starts a child
agentrun.AgentRun whose answer is the call's result."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.contracts import AgentConfig, RunResult, StartRunInput, Usage
from agentrun.contracts.subagents import child_run_id
from agentrun.protocol.events import EventType
from agentrun.protocol.statuses import Decision
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.store.usage import run_usage
from agentrun.testing.offline_model import Fault, OfflineModelServer, Reply, ToolCallSpec
from tests.store_helpers import run_tool_calls
from tests.test_cli import agentrun, cli_env
from workflows.agent import AgentRunWorkflow

RESEARCHER = {
    "description": "does arithmetic",
    "system_prompt": "You are a careful researcher.",
    "tools": ["calculator"],
    "max_turns": 4,
}


def _input(run_id: str, prompt: str, **config: Any) -> StartRunInput:
    return StartRunInput(
        run_id=run_id,
        session_id=f"s-{uuid.uuid4()}",
        prompt=prompt,
        config=AgentConfig(**config),
    )


def _delegate(task: str, call_id: str, agent: str = "researcher") -> ToolCallSpec:
    return ToolCallSpec(f"delegate_to_{agent}", {"task": task}, id=call_id)


async def _start(
    env: WorkflowEnvironment, settings: Settings, inp: StartRunInput
) -> WorkflowHandle[Any, RunResult]:
    return await env.client.start_workflow(
        AgentRunWorkflow.run, inp, id=inp.run_id, task_queue=settings.task_queue
    )


async def _usage_of(repo: Repository, run_id: str) -> Usage:
    # The run's record as the ledger sums it (tokens, calls, cost and unpriced calls).
    return run_usage(await repo.get_run(run_id))


async def _event_types(repo: Repository, run_id: str) -> list[str]:
    return [e.type for e in await repo.read_events(run_id, 0, limit=10_000)]


async def test_parent_delegates_child_runs_a_tool_and_its_answer_is_the_result(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"orchestrate {run_id}"
    task = f"multiply six by seven ({uuid.uuid4()})"
    model_server.script(
        prompt,
        [
            Reply(text="Asking the researcher.", tool_calls=[_delegate(task, "call_d1")]),
            Reply(text="The researcher says 42."),
        ],
    )
    model_server.script(
        task,
        [
            Reply(tool_calls=[ToolCallSpec("calculator", {"expression": "6*7"}, id="c_calc")]),
            Reply(text="6 times 7 is 42."),
        ],
    )
    inp = _input(run_id, prompt, tools=[], subagents={"researcher": RESEARCHER})
    result = await (await _start(temporal_env, settings, inp)).result()
    assert result.status == "DONE" and result.final_text == "The researcher says 42."

    child_id = child_run_id(run_id, "researcher", "call_d1")
    assert child_id == f"{run_id}.researcher.call_d1"
    child = await repo.get_run(child_id)
    parent = await repo.get_run(run_id)
    assert child.parent_run_id == run_id and parent.parent_run_id is None
    assert (child.status, child.final_text, child.tenant) == ("DONE", "6 times 7 is 42.", "default")
    assert child.session_id == child_id != parent.session_id
    assert child.config["system_prompt"] == "You are a careful researcher."
    assert child.config["tools"] == ["calculator"] and child.config["subagents"] is None

    # The child's own tool call, and the parent's delegate call whose result is the answer.
    child_calls = await run_tool_calls(repo, child_id)
    assert [(c.name, c.status, c.result) for c in child_calls] == [
        ("calculator", "succeeded", "42")
    ]
    (delegate,) = await run_tool_calls(repo, run_id)
    assert (delegate.name, delegate.status, delegate.is_error) == (
        "delegate_to_researcher",
        "succeeded",
        False,
    )
    assert delegate.result == "6 times 7 is 42."

    # The parent's model saw one tool, delegate_to_researcher; the child's saw calculator.
    (first, *_) = model_server.requests_for(prompt)
    assert [t["function"]["name"] for t in first.body["tools"]] == ["delegate_to_researcher"]
    (child_first, *_) = model_server.requests_for(task)
    assert [t["function"]["name"] for t in child_first.body["tools"]] == ["calculator"]
    assert child_first.body["messages"][0]["content"] == "You are a careful researcher."

    # Each has its own event log; the parent's names the child.
    types = await _event_types(repo, run_id)
    assert (
        types.count(EventType.SUBRUN_STARTED) == 1 and types.count(EventType.SUBRUN_FINISHED) == 1
    )
    assert types.index(EventType.SUBRUN_FINISHED) < types.index(EventType.TOOL_RESULT)
    events = await repo.read_events(run_id, 0, limit=1000)
    started = next(e for e in events if e.type == EventType.SUBRUN_STARTED)
    assert started.data == {
        "tool_call_id": "call_d1",
        "agent": "researcher",
        "subrun_id": child_id,
        "depth": 1,
    }
    finished = next(e for e in events if e.type == EventType.SUBRUN_FINISHED)
    assert finished.data["status"] == "DONE" and "error" not in finished.data
    assert EventType.TOOL_RESULT in await _event_types(repo, child_id)

    # Usage roll-up: the parent's result is its own record plus the child's.
    own, of_child = await _usage_of(repo, run_id), await _usage_of(repo, child_id)
    assert own.llm_calls == 2 and of_child.llm_calls == 2 and of_child.tool_calls == 1
    assert result.usage == own.add(of_child)
    view = await temporal_env.client.get_workflow_handle(run_id).query(AgentRunWorkflow.status)
    assert view.usage == own.add(of_child)


ASKING = {**RESEARCHER, "approval_overrides": {"calculator": "needs_approval"}}


async def _until(check: Any, timeout: float = 30) -> Any:
    """check()'s first truthy answer, polling (bounded)."""

    async def poll() -> Any:
        while True:
            found = await check()
            if found:
                return found
            await asyncio.sleep(0.1)

    return await asyncio.wait_for(poll(), timeout)


async def _child_waiting(
    env: WorkflowEnvironment, settings: Settings, model: OfflineModelServer, run_id: str
) -> tuple[WorkflowHandle[Any, RunResult], str, Any]:
    """A parent whose child waits for approval of calculator: (parent handle, child id, the
    parent's status view once it shows the wait)."""
    prompt = f"orchestrate {run_id}"
    task = f"ask before computing ({uuid.uuid4()})"
    model.script(
        prompt,
        [Reply(tool_calls=[_delegate(task, "call_d1")]), Reply(text="Parent done.")],
    )
    model.script(
        task,
        [
            Reply(tool_calls=[ToolCallSpec("calculator", {"expression": "2+2"}, id="c_ask")]),
            Reply(text="It is 4."),
        ],
    )
    inp = _input(run_id, prompt, tools=[], subagents={"researcher": ASKING})
    handle = await _start(env, settings, inp)

    async def waiting() -> Any:
        view = await handle.query(AgentRunWorkflow.status)
        return view if view.waiting_on else None

    view = await _until(waiting)
    return handle, child_run_id(run_id, "researcher", "call_d1"), view


async def test_a_child_waiting_for_approval_shows_in_the_parent_and_is_decided_on_the_child(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    handle, child_id, view = await _child_waiting(temporal_env, settings, model_server, run_id)
    (entry,) = view.waiting_on
    assert (entry.run_id, entry.agent) == (child_id, "researcher")
    (pending,) = entry.calls
    assert (pending.tool_call_id, pending.name, pending.kind) == ("c_ask", "calculator", "approval")
    assert view.status == "RUNNING" and view.pending == []
    meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert f"waiting on sub-run {child_id} for approval of calculator" in meta.current_details
    events = await repo.read_events(run_id, 0, limit=1000)
    waiting = [e for e in events if e.type == EventType.SUBRUN_WAITING]
    assert [(e.data["subrun_id"], e.data["tool_call_id"], e.data["name"]) for e in waiting] == [
        (child_id, "c_ask", "calculator")
    ]
    assert waiting[0].data["arguments_sha256"] == pending.arguments_sha256

    # The CLI's status of the parent says what it waits on.
    shown = json.loads((await agentrun(cli_env(settings), "status", run_id, "--json")).out)
    assert [
        (w["run_id"], [c["tool_call_id"] for c in w["calls"]]) for w in shown["waiting_on"]
    ] == [(child_id, ["c_ask"])]
    child_shown = json.loads((await agentrun(cli_env(settings), "status", child_id, "--json")).out)
    assert child_shown["parent_run_id"] == run_id
    assert [p["tool_call_id"] for p in child_shown["pending"]] == ["c_ask"]

    # Decided on the child, with the usual update; the parent then goes on by itself.
    child = temporal_env.client.get_workflow_handle(child_id)
    await child.execute_update(
        AgentRunWorkflow.decide_tool_call,
        {"tool_call_id": "c_ask", "decision": Decision.APPROVE, "decided_by": "ops"},
    )
    result = await handle.result()
    assert result.status == "DONE"
    (delegate,) = await run_tool_calls(repo, run_id)
    assert delegate.result == "It is 4."
    assert (await handle.query(AgentRunWorkflow.status)).waiting_on == []


@pytest.mark.parametrize("how", ["update", "temporal"])
async def test_cancelling_the_parent_while_its_child_waits_cancels_both(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    how: str,
) -> None:
    handle, child_id, _ = await _child_waiting(temporal_env, settings, model_server, run_id)
    if how == "update":
        answer = await handle.execute_update(AgentRunWorkflow.cancel, {"reason": "user left"})
        assert answer.status == "CANCELED"
    else:  # the Web UI's button, `temporal workflow cancel`
        await handle.cancel()
    child = temporal_env.client.get_workflow_handle(child_id)
    for h in (handle, child):
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(h.result(), 30)
        assert (await h.describe()).status == WorkflowExecutionStatus.CANCELED
    parent_row, child_row = await repo.get_run(run_id), await repo.get_run(child_id)
    assert (parent_row.status, child_row.status) == ("CANCELED", "CANCELED")
    # The child's waiting call and the parent's delegate call both got a result.
    (asked,) = await run_tool_calls(repo, child_id)
    assert asked.is_error and (asked.result or "").startswith("cancelled:")
    (delegate,) = await run_tool_calls(repo, run_id)
    assert delegate.is_error and (delegate.result or "").startswith("cancelled:")
    finished = [
        e
        for e in await repo.read_events(run_id, 0, limit=1000)
        if e.type == EventType.SUBRUN_FINISHED
    ]
    assert [e.data["status"] for e in finished] == ["CANCELED"]


async def test_a_failed_child_is_an_error_result_and_the_parent_goes_on(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"orchestrate {run_id}"
    task = f"this one breaks ({uuid.uuid4()})"
    model_server.script(
        prompt,
        [Reply(tool_calls=[_delegate(task, "call_bad")]), Reply(text="The researcher failed.")],
    )
    model_server.script(task, [Fault("http", 400, "Invalid value for 'messages'.")])
    inp = _input(run_id, prompt, tools=[], subagents={"researcher": RESEARCHER})
    result = await (await _start(temporal_env, settings, inp)).result()
    assert result.status == "DONE" and result.final_text == "The researcher failed."
    child_id = child_run_id(run_id, "researcher", "call_bad")
    child = await repo.get_run(child_id)
    assert child.status == "FAILED" and "Invalid value for 'messages'." in (child.error or "")
    (delegate,) = await run_tool_calls(repo, run_id)
    assert delegate.is_error and delegate.status == "error"
    assert (delegate.result or "").startswith(
        f"error: delegate_to_researcher: the sub-agent's run {child_id} failed"
    )
    assert "Invalid value for 'messages'." in (delegate.result or "")
    # The model saw that error as the call's result.
    (_, second) = model_server.requests_for(prompt)
    tool_message = next(m for m in second.body["messages"] if m["role"] == "tool")
    assert tool_message["content"] == delegate.result
    finished = [
        e
        for e in await repo.read_events(run_id, 0, limit=1000)
        if e.type == EventType.SUBRUN_FINISHED
    ]
    assert [e.data["status"] for e in finished] == ["FAILED"]
    assert result.usage == (await _usage_of(repo, run_id)).add(await _usage_of(repo, child_id))


async def test_fanout_and_depth_limits_give_error_results(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"orchestrate {run_id}"
    tasks = [f"part {i} ({uuid.uuid4()})" for i in range(3)]
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[_delegate(t, f"call_{i}") for i, t in enumerate(tasks)]),
            Reply(text="Two of three."),
        ],
    )
    # The first child (depth 1 of max_depth 1) has no delegate tool; one it calls anyway is
    # an error result, not a crash.
    model_server.script(
        tasks[0],
        [Reply(tool_calls=[_delegate("deeper", "call_deep")]), Reply(text="answer 0")],
    )
    model_server.script(tasks[1], [Reply(text="answer 1")])
    model_server.script(tasks[2], [Reply(text="answer 2")])
    config = {
        "tools": [],
        "max_fanout": 2,
        "subagents": {"researcher": {**RESEARCHER, "subagents": ["researcher"]}},
    }
    result = await (await _start(temporal_env, settings, _input(run_id, prompt, **config))).result()
    assert result.status == "DONE"
    calls = {c.tool_call_id: c for c in await run_tool_calls(repo, run_id)}
    assert (calls["call_0"].result, calls["call_1"].result) == ("answer 0", "answer 1")
    assert calls["call_2"].is_error
    assert "at most 2 sub-runs at once (max_fanout)" in (calls["call_2"].result or "")
    assert model_server.requests_for(tasks[2]) == []
    with pytest.raises(Exception, match="no run"):
        await repo.get_run(child_run_id(run_id, "researcher", "call_2"))

    first = child_run_id(run_id, "researcher", "call_0")
    (deep,) = await run_tool_calls(repo, first)
    assert deep.is_error and "not enabled" in (deep.result or "")
    offered = model_server.requests_for(tasks[0])[0].body["tools"]
    assert [t["function"]["name"] for t in offered] == ["calculator"]
    assert (await repo.get_run(first)).config["subagents"] is None


async def test_two_levels_deep_within_max_depth(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"orchestrate {run_id}"
    task, subtask = f"plan ({uuid.uuid4()})", f"detail ({uuid.uuid4()})"
    model_server.script(
        prompt, [Reply(tool_calls=[_delegate(task, "c1", "planner")]), Reply(text="top")]
    )
    model_server.script(
        task, [Reply(tool_calls=[_delegate(subtask, "c2", "coder")]), Reply(text="middle")]
    )
    model_server.script(subtask, [Reply(text="bottom")])
    subagents = {
        "planner": {"system_prompt": "plan", "tools": [], "subagents": ["coder"]},
        "coder": {"system_prompt": "code", "tools": []},
    }
    inp = _input(run_id, prompt, tools=[], max_depth=2, subagents=subagents)
    result = await (await _start(temporal_env, settings, inp)).result()
    assert (result.status, result.final_text) == ("DONE", "top")
    child = child_run_id(run_id, "planner", "c1")
    grandchild = child_run_id(child, "coder", "c2")
    assert (await repo.get_run(grandchild)).parent_run_id == child
    assert [c.result for c in await run_tool_calls(repo, child)] == ["bottom"]
    assert [c.result for c in await run_tool_calls(repo, run_id)] == ["middle"]
    # The planner (depth 1) is offered only the coder; the coder (depth 2) nothing.
    (planner_request, *_) = model_server.requests_for(task)
    assert [t["function"]["name"] for t in planner_request.body["tools"]] == ["delegate_to_coder"]
    assert "tools" not in model_server.requests_for(subtask)[0].body
    started = [
        e.data
        for e in await repo.read_events(child, 0, limit=1000)
        if e.type == EventType.SUBRUN_STARTED
    ]
    assert [(d["subrun_id"], d["depth"]) for d in started] == [(grandchild, 2)]
    usages = [await _usage_of(repo, r) for r in (run_id, child, grandchild)]
    assert result.usage == usages[0].add(usages[1]).add(usages[2])


async def test_a_child_cancelled_on_its_own_is_an_error_result_for_the_parent(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    handle, child_id, _ = await _child_waiting(temporal_env, settings, model_server, run_id)
    child = temporal_env.client.get_workflow_handle(child_id)
    await child.execute_update(
        AgentRunWorkflow.cancel, {"reason": "not this", "requested_by": "ops"}
    )
    result = await handle.result()
    assert (result.status, result.final_text) == ("DONE", "Parent done.")
    assert (await repo.get_run(child_id)).status == "CANCELED"
    (delegate,) = await run_tool_calls(repo, run_id)
    assert delegate.is_error and "was cancelled: cancelled by ops: not this" in (
        delegate.result or ""
    )
