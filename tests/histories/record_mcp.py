"""Record histories of runs that use MCP tools into tests/histories/<label>/ (v6-mcp):

    python -m tests.histories.record_mcp <label>

The same recorder as tests/histories/record.py (its servers, worker and writing), with these
scenarios and a worker whose MCP pool serves the test server tests/mcp_servers/notes_server.py
over stdio."""

from __future__ import annotations

import asyncio
import functools
import sys
import tempfile
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowFailureError

from agentrun.mcp.pool import McpPool
from agentrun.protocol.statuses import Decision
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from tests.histories import record as recorder
from tests.histories.record import HERE, _start, _wait_pending
from tests.mcp_support import stdio_server
from worker import build_worker
from workflows.agent import AgentRunWorkflow


async def mcp_tools(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    """A read-only MCP tool runs unasked (allow_safe); a destructive one is approved with edits."""
    prompt = f"look up and note {rid}"
    model.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("notes__lookup", {"word": "durable"}, id="c_l")]),
            Reply(tool_calls=[ToolCallSpec("notes__save_note", {"text": "draft"}, id="c_n")]),
            Reply(text="Looked up and noted."),
        ],
    )
    h = await _start(
        client, tq, rid, prompt, tools=[], mcp_servers=["notes"], approval="allow_safe"
    )
    pending = await _wait_pending(h)
    await h.execute_update(
        AgentRunWorkflow.decide_tool_call,
        {
            "tool_call_id": pending.tool_call_id,
            "decision": Decision.APPROVE_WITH_EDITS,
            "arguments": {"text": "final"},
            "decided_by": "recorder",
        },
    )
    await h.result()
    return h


async def mcp_error(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    """An isError result and a narrowed server (only some of its tools)."""
    prompt = f"fail on purpose {rid}"
    model.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("trusted__fail", {"reason": "no"}, id="c_f")]),
            Reply(text="It failed."),
        ],
    )
    h = await _start(
        client,
        tq,
        rid,
        prompt,
        tools=[],
        mcp_servers=[{"server": "trusted", "tools": ["fail", "lookup"]}],
        approval="skip_all",
    )
    await h.result()
    return h


async def mcp_refused(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    """A run that names a tool its server does not offer fails after its open."""
    h = await _start(
        client, tq, rid, f"hi {rid}", mcp_servers=[{"server": "notes", "tools": ["nope"]}]
    )
    try:
        await h.result()
    except WorkflowFailureError:
        pass
    return h


SCENARIOS = {"mcp_tools": mcp_tools, "mcp_error": mcp_error, "mcp_refused": mcp_refused}


async def record(out: Path) -> None:
    log = Path(tempfile.mkdtemp(prefix="agentrun-record-mcp-")) / "calls.jsonl"
    pool = McpPool(
        {
            "notes": stdio_server("notes", log),
            "trusted": stdio_server("trusted", log, approval="auto"),
        }
    )
    # record.py's recorder, with these scenarios and a worker that has the pool.
    recorder.SCENARIOS = SCENARIOS  # type: ignore[assignment]
    recorder.build_worker = functools.partial(build_worker, mcp_pool=pool)  # type: ignore[assignment]
    try:
        await recorder.record(out)
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m tests.histories.record_mcp <label>")
    asyncio.run(record(HERE / args[0]))


if __name__ == "__main__":
    main()
