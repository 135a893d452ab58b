"""A worker SIGKILLed during an MCP call (issue 15 item 3): the call is retried on a new worker
with the same idempotency key, the server sees it at most twice, the record has it once; and
no MCP server process outlives the worker that started it."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from agentrun.db.models import RunEvent
from agentrun.protocol.events import EventType
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from tests.conftest import WorkerProcess, process_running, start_input
from tests.mcp_support import REPO_ROOT, SERVER_MODULE, calls, wait_for_call, wait_until
from tests.store_helpers import count, run_tool_calls
from workflows.agent import AgentRunWorkflow


@pytest.fixture
def worker_process(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WorkerProcess]:
    log, hold = tmp_path / "calls.jsonl", tmp_path / "hold"
    servers = {
        "notes": {
            "command": sys.executable,
            "args": ["-m", SERVER_MODULE],
            "cwd": str(REPO_ROOT),
            "env": {"MCP_TEST_LOG": str(log), "MCP_TEST_HOLD": str(hold)},
            "approval": "auto",
        }
    }
    monkeypatch.setenv("AGENTRUN_MCP_SERVERS", json.dumps(servers))
    wp = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        yield wp
    finally:
        wp.stop()


async def test_a_worker_killed_mid_call_retries_with_the_same_key_and_records_once(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    worker_process: WorkerProcess,
    run_id: str,
    tmp_path: Path,
) -> None:
    log, hold = tmp_path / "calls.jsonl", tmp_path / "hold"
    prompt = f"slow MCP call {run_id}"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("notes__slow", {"seconds": 0}, id="c_w")]),
            Reply(text="It finished."),
        ],
    )
    hold.touch()
    worker_process.start()
    handle = await temporal_env.client.start_workflow(
        AgentRunWorkflow.run,
        start_input(
            run_id,
            prompt,
            tools=[],
            mcp_servers=["notes"],
            approval="skip_all",
            tool_heartbeat_timeout_s=2,
        ),
        id=run_id,
        task_queue=settings.task_queue,
    )
    first = await wait_for_call(log, "slow", "c_w", timeout=60)
    worker_process.kill()
    # The killed worker's stdio server sees its stdin close and exits: nothing is left behind.
    await wait_until(lambda: not process_running(first["pid"]), "the orphaned server to exit")
    hold.unlink()
    worker_process.start()
    result = await asyncio.wait_for(handle.result(), 90)
    assert result.status == "DONE" and result.final_text == "It finished."
    seen = calls(log, "slow", "c_w")
    assert 1 <= len(seen) <= 2  # at least once, and at most twice (one per worker)
    assert len(seen) == 2 and seen[1]["pid"] != first["pid"]
    [call] = await run_tool_calls(repo, run_id)
    assert (call.status, call.result, call.attempts) == ("succeeded", "waited 0.0s", 2)
    assert await count(repo, RunEvent, run_id=run_id, type=EventType.TOOL_RESULT) == 1
    # A worker that stops (SIGTERM) stops the servers it started.
    second = [c["pid"] for c in calls(log, "(started)") if c["pid"] != first["pid"]]
    assert second and all(process_running(p) for p in second)
    worker_process.stop()
    await wait_until(
        lambda: not any(process_running(p) for p in second), "the worker's servers to stop"
    )
