"""Sub-agents as child runs (README Sub-agents), on a real Temporal dev server, a real
PostgreSQL and the offline model: a parent's `delegate_to_<name>` call starts a child
agentrun.AgentRun whose answer is the call's result."""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.contracts import AgentConfig, RunResult, StartRunInput, Usage
from agentrun.contracts.subagents import child_run_id
from agentrun.protocol.events import EventType
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from tests.store_helpers import run_tool_calls
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
    run = await repo.get_run(run_id)
    return Usage(
        prompt_tokens=run.prompt_tokens,
        completion_tokens=run.completion_tokens,
        llm_calls=run.llm_call_count,
        tool_calls=run.tool_call_count,
        turns=run.turns,
    )


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
