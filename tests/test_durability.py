"""Durability: a worker killed with SIGKILL mid-stream and mid-tool is replaced and the run
finishes with every record exactly once; histories replay against the current code; history
per run does not grow with the session."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from agentrun.client import list_query
from agentrun.db.models import LlmCall, Message, RunEvent, ToolCall
from agentrun.protocol.events import EventType
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from tests.conftest import WorkerProcess, next_event, start_input
from tests.store_helpers import count, run_llm_calls, run_tool_calls
from workflows import ALL_WORKFLOWS
from workflows.agent import AgentRunWorkflow


@pytest.fixture
def worker_process(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    wp = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        yield wp
    finally:
        wp.stop()


async def assert_exactly_once(repo: Repository, run_id: str, turns: int, tools: int) -> None:
    messages = await repo.run_messages(run_id)
    assert [m.role for m in messages].count("assistant") == turns
    assert [m.role for m in messages].count("tool") == tools
    assert [m.role for m in messages].count("user") == 1
    keys = [m.idempotency_key for m in messages]
    assert len(keys) == len(set(keys))
    assert await count(repo, ToolCall, run_id=run_id) == tools
    ok = [c for c in await run_llm_calls(repo, run_id) if c.status == "ok"]
    assert sorted(c.turn for c in ok) == list(range(1, turns + 1))
    events = await repo.read_events(run_id, 0, limit=100_000)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    types = [e.type for e in events]
    assert types.count(EventType.MESSAGE_COMPLETED) == turns
    assert types.count(EventType.TOOL_RESULT) == tools


async def test_worker_killed_while_streaming_is_replaced(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    worker_process: WorkerProcess,
    run_id: str,
) -> None:
    prompt = f"stream slowly {run_id}"
    model_server.script(
        prompt,
        [Reply(text="word " * 200, chunk_chars=5, delay_s=0.05), Reply(text="Complete answer.")],
    )
    worker_process.start()
    handle = await temporal_env.client.start_workflow(
        AgentRunWorkflow.run,
        start_input(run_id, prompt, tools=[], model_heartbeat_timeout_s=2),
        id=run_id,
        task_queue=settings.task_queue,
    )
    await next_event(repo, run_id, EventType.MESSAGE_DELTA)
    worker_process.kill()
    worker_process.start()
    result = await asyncio.wait_for(handle.result(), 90)
    assert result.status == "DONE" and result.final_text == "Complete answer."
    await assert_exactly_once(repo, run_id, turns=1, tools=0)
    llm = await run_llm_calls(repo, run_id)
    assert [(c.attempt, c.status) for c in llm] == [(1, "lost"), (2, "ok")]
    events = await repo.read_events(run_id, 0, limit=100_000)
    assert any(e.type == EventType.STREAM_RESET and e.data["attempt"] == 2 for e in events)


async def test_worker_killed_during_a_tool_is_replaced(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    worker_process: WorkerProcess,
    run_id: str,
    tmp_path: Path,
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    prompt = f"run a slow command {run_id}"
    command = "echo started >> starts.log; sleep 3; echo finished"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("bash", {"command": command}, id="call_bash")]),
            Reply(text="The command finished."),
        ],
    )
    worker_process.start()
    handle = await temporal_env.client.start_workflow(
        AgentRunWorkflow.run,
        start_input(
            run_id,
            prompt,
            workspace=str(workspace),
            tool_heartbeat_timeout_s=2,
            approval="skip_all",
        ),
        id=run_id,
        task_queue=settings.task_queue,
    )
    await next_event(repo, run_id, EventType.TOOL_CALL)
    deadline = asyncio.get_running_loop().time() + 30
    while not (workspace / "starts.log").exists():
        assert asyncio.get_running_loop().time() < deadline, "the tool never started"
        await asyncio.sleep(0.05)
    worker_process.kill()
    worker_process.start()
    result = await asyncio.wait_for(handle.result(), 90)
    assert result.status == "DONE" and result.final_text == "The command finished."
    await assert_exactly_once(repo, run_id, turns=2, tools=1)
    call = (await run_tool_calls(repo, run_id))[0]
    assert call.status == "succeeded" and call.result == "exit code 0\nfinished\n"
    assert call.attempts == 2
    # At least once: the tool really ran twice, and its result was recorded once.
    assert (workspace / "starts.log").read_text() == "started\nstarted\n"


async def test_history_per_run_does_not_grow_with_the_session(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    session_id = f"s-{uuid.uuid4()}"
    sizes: list[tuple[int, int]] = []
    for n in range(50):
        run_id = f"run-{uuid.uuid4()}"
        prompt = f"question {n:03d} {run_id}"
        model_server.script(
            prompt,
            [
                Reply(
                    text="Let me compute.",
                    tool_calls=[ToolCallSpec("calculator", {"expression": f"{n}+1"})],
                ),
                Reply(text=f"The answer is {n + 1}. " + "More words. " * 20),
            ],
        )
        handle = await temporal_env.client.start_workflow(
            AgentRunWorkflow.run,
            start_input(run_id, prompt, session_id),
            id=run_id,
            task_queue=settings.task_queue,
        )
        await handle.result()
        info = (await handle.describe()).raw_description.workflow_execution_info
        sizes.append((info.history_length, info.history_size_bytes))
    assert await count(repo, Message, session_id=session_id) == 50 * 4
    first_len, first_bytes = sizes[0]
    last_len, last_bytes = sizes[-1]
    assert last_len == first_len
    assert last_bytes <= first_bytes * 1.1, sizes
    # The model saw the growing conversation, even though the history did not grow.
    last_prompt = model_server.requests[-1].body["messages"]
    assert len(last_prompt) > 100


async def test_recorded_histories_replay_against_the_current_code(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    client: Client = temporal_env.client
    prompt = f"replay me {uuid.uuid4()}"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("calculator", {"expression": "2+2"})]),
            Reply(text="4"),
        ],
    )
    run_id = f"run-{uuid.uuid4()}"
    await client.execute_workflow(
        AgentRunWorkflow.run, start_input(run_id, prompt), id=run_id, task_queue=settings.task_queue
    )
    # Every agent run this test session finished so far (loop, faults, kills, failures).
    histories = []
    async for wf in client.list_workflows(list_query() + " AND ExecutionStatus != 'Running'"):
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        # Encrypted runs (other tests') need their key: tests/test_payload_codec.py replays them.
        started = history.events[0].workflow_execution_started_event_attributes
        if started.input.payloads[0].metadata.get("encoding") != b"binary/encrypted":
            histories.append(history)
    assert len(histories) >= 1
    replayer = Replayer(workflows=ALL_WORKFLOWS, data_converter=pydantic_data_converter)
    failures = {}
    for history in histories:
        outcome = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        if outcome.replay_failure is not None:
            failures[history.workflow_id] = str(outcome.replay_failure)
    assert failures == {}
    assert await count(repo, LlmCall, run_id=run_id) == 2
    assert await count(repo, RunEvent, run_id=run_id) > 0
