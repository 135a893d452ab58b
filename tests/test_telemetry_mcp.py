"""Tool metrics keep an MCP tool's `server__tool` name (README Observability): a name the run
recorded from a server the worker declares is a bounded label; a name the model made up is
"other". Exact counts, scraped from the worker's /metrics, on every path a tool call is counted
(run, rejected by a person, refused)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

from agentrun.mcp.pool import McpPool
from agentrun.protocol.events import EventType
from agentrun.settings import Settings
from agentrun.stack import free_port
from agentrun.store import Repository
from agentrun.telemetry.metrics import prometheus_runtime
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from starter.api import decide
from tests.conftest import next_event, start_input
from tests.mcp_support import stdio_server
from tests.store_helpers import run_tool_calls
from tests.test_telemetry_metrics import scrape, value
from worker import build_worker, connect_client
from workflows.agent import AgentRunWorkflow


async def test_mcp_tool_calls_are_counted_under_their_names(
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    port = free_port()
    runtime = prometheus_runtime("127.0.0.1", port)
    url = f"http://127.0.0.1:{port}/metrics"
    client = await connect_client(settings, runtime)
    tq = f"{settings.task_queue}-{uuid.uuid4().hex[:6]}"
    settings = settings.model_copy(update={"task_queue": tq})
    prompt = f"use the notes {run_id}"
    model_server.script(
        prompt,
        [
            Reply(
                tool_calls=[
                    ToolCallSpec("notes__lookup", {"word": "durable"}, id="c_ok"),
                    ToolCallSpec("notes__save_note", {"text": "x"}, id="c_no"),
                    # Made up by the model: the server offers no such tool.
                    ToolCallSpec("notes__made_up_1", {}, id="c_bad"),
                ]
            ),
            Reply(text="Done."),
        ],
    )
    pool = McpPool({"notes": stdio_server("notes", tmp_path / "calls.jsonl")})
    worker = build_worker(
        client, settings, repo, graceful_shutdown=timedelta(seconds=1), mcp_pool=pool
    )
    try:
        async with worker:
            handle = await client.start_workflow(
                AgentRunWorkflow.run,
                start_input(run_id, prompt, tools=[], mcp_servers=["notes"], approval="allow_safe"),
                id=run_id,
                task_queue=tq,
            )
            await next_event(repo, run_id, EventType.TOOL_APPROVAL_REQUESTED)
            await decide(client, run_id, "c_no", "reject", reason="not now")
            result = await asyncio.wait_for(handle.result(), 60)
    finally:
        await pool.close()
    assert result.status == "DONE", result.error
    by_id = {c.tool_call_id: c for c in await run_tool_calls(repo, run_id)}
    assert by_id["c_ok"].status == "succeeded" and by_id["c_bad"].result.startswith("error")

    after = await scrape(url)

    def got(**labels: str) -> float:
        return value(after, "agentrun_tool_calls_total", task_queue=tq, **labels)

    assert got(tool="notes__lookup", outcome="ok") == 1
    assert got(tool="notes__lookup") == 1
    assert got(tool="notes__save_note", outcome="rejected") == 1
    assert got(tool="notes__save_note") == 1
    assert got(tool="other") == 1
    assert got() == 3
    assert not any("made_up" in v for _, ls, _ in after for v in ls.values())
