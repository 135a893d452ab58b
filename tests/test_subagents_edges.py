"""Sub-agents at their edges (README Sub-agents): a delegate call that asks for approval and is
edited, an answer longer than the workflow carries, a grandchild's wait seen from the root, a
parent terminated under its child, a child id already taken, a sub-agent the worker refuses."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.contracts import RESULT_TEXT_LIMIT
from agentrun.contracts.subagents import child_run_id
from agentrun.protocol.events import EventType
from agentrun.protocol.statuses import Decision
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from tests.conftest import next_event
from tests.store_helpers import run_tool_calls
from tests.test_subagents import _delegate, _input, _start, _until
from workflows.agent import AgentRunWorkflow


async def test_an_approved_and_edited_delegation_runs_the_edited_task_and_keeps_a_long_answer(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"orchestrate {run_id}"
    asked, edited = f"write everything ({uuid.uuid4()})", f"write a lot ({uuid.uuid4()})"
    long_answer = "".join(f"line {i:05d}\n" for i in range(800))  # 8,800 characters
    model_server.script(prompt, [Reply(tool_calls=[_delegate(asked, "c1")]), Reply(text="ok")])
    model_server.script(edited, [Reply(text=long_answer, chunk_chars=400)])
    inp = _input(run_id, prompt, tools=[], approval="require_all", subagents={"researcher": {}})
    handle = await _start(temporal_env, settings, inp)

    async def pending() -> object:
        view = await handle.query(AgentRunWorkflow.status)
        return view.pending[0] if view.pending else None

    call = await _until(pending)
    assert (call.name, call.kind) == ("delegate_to_researcher", "approval")
    await handle.execute_update(
        AgentRunWorkflow.decide_tool_call,
        {
            "tool_call_id": "c1",
            "decision": Decision.APPROVE_WITH_EDITS,
            "arguments": {"task": edited},
            "decided_by": "alice",
        },
    )
    assert (await handle.result()).status == "DONE"
    assert model_server.requests_for(asked) == []
    child = child_run_id(run_id, "researcher", "c1")
    assert (await repo.get_run(child)).final_text == long_answer
    (delegate,) = await run_tool_calls(repo, run_id)
    assert len(long_answer) > RESULT_TEXT_LIMIT and delegate.result == long_answer


async def test_a_grandchilds_wait_shows_at_the_root_and_clears(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"orchestrate {run_id}"
    task, subtask = f"plan ({uuid.uuid4()})", f"compute ({uuid.uuid4()})"
    model_server.script(
        prompt, [Reply(tool_calls=[_delegate(task, "c1", "planner")]), Reply(text="top")]
    )
    model_server.script(
        task, [Reply(tool_calls=[_delegate(subtask, "c2", "coder")]), Reply(text="middle")]
    )
    model_server.script(
        subtask,
        [
            Reply(tool_calls=[ToolCallSpec("calculator", {"expression": "1+2"}, id="c3")]),
            Reply(text="3"),
        ],
    )
    subagents = {
        "planner": {"tools": [], "subagents": ["coder"]},
        "coder": {"tools": ["calculator"], "approval": "require_all"},
    }
    inp = _input(run_id, prompt, tools=[], max_depth=2, subagents=subagents)
    handle = await _start(temporal_env, settings, inp)

    async def waiting() -> object:
        view = await handle.query(AgentRunWorkflow.status)
        return view.waiting_on or None

    (entry,) = await _until(waiting)
    child = child_run_id(run_id, "planner", "c1")
    grandchild = child_run_id(child, "coder", "c2")
    assert (entry.run_id, entry.agent, [c.tool_call_id for c in entry.calls]) == (
        grandchild,
        "coder",
        ["c3"],
    )
    for rid in (run_id, child):  # each ancestor's log says whom it waits on

        async def waits(rid: str = rid) -> list[tuple[str, str]]:
            # Written by the signal's handler: it may commit just after the query shows it.
            events = await repo.read_events(rid, 0, limit=1000)
            return [
                (e.data["subrun_id"], e.data["tool_call_id"])
                for e in events
                if e.type == EventType.SUBRUN_WAITING
            ]

        assert await _until(waits) == [(grandchild, "c3")]
    await temporal_env.client.get_workflow_handle(grandchild).execute_update(
        AgentRunWorkflow.decide_tool_call, {"tool_call_id": "c3", "decision": "approve"}
    )
    assert (await handle.result()).final_text == "top"
    assert (await handle.query(AgentRunWorkflow.status)).waiting_on == []


async def test_a_terminated_parent_cancels_its_child(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    from tests.test_subagents import _child_waiting

    handle, child_id, _ = await _child_waiting(temporal_env, settings, model_server, run_id)
    await handle.terminate("operator")
    child = temporal_env.client.get_workflow_handle(child_id)
    with pytest.raises(WorkflowFailureError):
        await child.result()
    assert (await child.describe()).status == WorkflowExecutionStatus.CANCELED
    assert (await repo.get_run(child_id)).status == "CANCELED"


async def test_a_child_id_already_taken_is_an_error_result(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    taken = child_run_id(run_id, "researcher", "c1")
    squatter = f"squat {uuid.uuid4()}"
    model_server.script(squatter, [Reply(text="I was here first.")])
    await (await _start(temporal_env, settings, _input(taken, squatter, tools=[]))).result()
    prompt = f"orchestrate {run_id}"
    model_server.script(
        prompt, [Reply(tool_calls=[_delegate("anything", "c1")]), Reply(text="Could not.")]
    )
    inp = _input(run_id, prompt, tools=[], subagents={"researcher": {}})
    assert (await (await _start(temporal_env, settings, inp)).result()).status == "DONE"
    (delegate,) = await run_tool_calls(repo, run_id)
    assert delegate.is_error and "exists already; not started again" in (delegate.result or "")
    assert (await repo.get_run(taken)).parent_run_id is None  # the squatter is untouched


async def test_a_subagent_the_worker_refuses_refuses_the_parent_at_open(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    run_id: str,
) -> None:
    inp = _input(run_id, "never runs", subagents={"researcher": {"tools": ["nosuch"]}})
    with pytest.raises(WorkflowFailureError) as info:
        await (await _start(temporal_env, settings, inp)).result()
    assert "sub-agent 'researcher': unknown tool(s) nosuch" in str(info.value.cause)
    assert await repo.find_run(run_id) is None


async def test_agentrun_run_shows_sub_runs_and_how_to_approve_their_calls(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    from tests.test_cli import agentrun, cli_env, spawn

    prompt, task = f"orchestrate {run_id}", f"ask first ({uuid.uuid4()})"
    model_server.script(prompt, [Reply(tool_calls=[_delegate(task, "c1")]), Reply(text="Fine.")])
    model_server.script(
        task,
        [
            Reply(tool_calls=[ToolCallSpec("calculator", {"expression": "2*3"}, id="c2")]),
            Reply(text="6"),
        ],
    )
    config = {
        "tools": [],
        "approval_overrides": {"delegate_to_researcher": "auto"},
        "subagents": {"researcher": {"tools": ["calculator"], "approval": "require_all"}},
    }
    env = cli_env(settings)
    follower = await spawn(
        env, "run", prompt, "--run-id", run_id, "--no-input", "--config", json.dumps(config)
    )
    child = child_run_id(run_id, "researcher", "c1")
    await next_event(repo, run_id, EventType.SUBRUN_WAITING)
    approved = await agentrun(env, "approve", child, "c2", "--by", "cli")
    assert approved.code == 0, approved.err
    out, err = await asyncio.wait_for(follower.communicate(), 90)
    text = out.decode()
    assert follower.returncode == 0, (text, err.decode())
    assert f"sub-agent researcher started run {child}" in text
    assert f"waiting on sub-run {child} for approval of calculator" in text
    assert f"agentrun approve {child} c2" in text
    assert f"run {child} ended DONE" in text


async def test_a_child_refused_at_open_is_an_error_result(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    # Another tenant holds a session under the child's id: the child is refused (it never
    # widens into that tenant's session), writes nothing, and the parent reads why.
    child = child_run_id(run_id, "researcher", "c1")
    squatter = f"squat {uuid.uuid4()}"
    model_server.script(squatter, [Reply(text="mine")])
    other = _input(f"other-{uuid.uuid4()}", squatter, tools=[]).model_copy(
        update={"session_id": child, "tenant": "other"}
    )
    await (await _start(temporal_env, settings, other)).result()
    prompt = f"orchestrate {run_id}"
    model_server.script(prompt, [Reply(tool_calls=[_delegate("x", "c1")]), Reply(text="No.")])
    inp = _input(run_id, prompt, tools=[], subagents={"researcher": {}})
    result = await (await _start(temporal_env, settings, inp)).result()
    assert result.status == "DONE"
    assert await repo.find_run(child) is None
    (delegate,) = await run_tool_calls(repo, run_id)
    assert delegate.is_error and f"the sub-agent's run {child} failed" in (delegate.result or "")
    assert "no session" in (delegate.result or "")


async def test_a_child_runs_within_what_is_left_of_its_parents_budget(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    from tests.store_helpers import run_llm_calls

    prompt, task = f"orchestrate {run_id}", f"cheap ({uuid.uuid4()})"
    model_server.script(prompt, [Reply(tool_calls=[_delegate(task, "c1")]), Reply(text="ok")])
    model_server.script(task, [Reply(text="done")])
    inp = _input(run_id, prompt, tools=[], max_total_tokens=100_000, subagents={"researcher": {}})
    assert (await (await _start(temporal_env, settings, inp)).result()).status == "DONE"
    first = (await run_llm_calls(repo, run_id))[0]
    spent = (first.prompt_tokens or 0) + (first.completion_tokens or 0)
    child = await repo.get_run(child_run_id(run_id, "researcher", "c1"))
    assert spent > 0 and child.config["max_total_tokens"] == 100_000 - spent


async def test_deleting_the_parents_session_erases_its_sub_runs_too(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    """A sub-run's session holds the task its parent wrote: forgetting the parent's session
    forgets it as well (text gone from every column, usage kept, tombstones in both)."""
    from agentrun.client.forget import delete_session
    from agentrun.contracts.subagents import child_run_id
    from tests.test_forget import marker_hits
    from tests.test_subagents import RESEARCHER, _delegate, _input, _start

    marker = f"forget-me-{uuid.uuid4()}"
    prompt, task = f"orchestrate {run_id}", f"multiply six by seven {marker}"
    model_server.script(
        prompt,
        [Reply(tool_calls=[_delegate(task, "call_f1")]), Reply(text="Done with it.")],
    )
    model_server.script(task, [Reply(text=f"6 times 7 is 42 ({marker}).")])
    inp = _input(run_id, prompt, tools=[], subagents={"researcher": RESEARCHER})
    assert (await (await _start(temporal_env, settings, inp)).result()).status == "DONE"
    child_id = child_run_id(run_id, "researcher", "call_f1")
    child_tokens = (await repo.get_run(child_id)).completion_tokens
    assert child_tokens > 0 and await marker_hits(repo, marker)

    deleted = await delete_session(temporal_env.client, repo, inp.session_id)
    assert set(deleted.run_ids) == {run_id, child_id}
    assert await marker_hits(repo, marker) == set()
    child = await repo.get_run(child_id)
    assert child.completion_tokens == child_tokens  # usage stays
    async with repo.session() as db:
        from agentrun.db.models import Session

        assert (await db.get(Session, child.session_id)).deleted_at is not None
