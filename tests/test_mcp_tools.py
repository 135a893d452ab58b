"""MCP servers as tool sources (issue 15 item 1): a real MCP server (tests/mcp_servers) over
stdio and over Streamable HTTP; tools listed and recorded at open; calls with approval and
edits, isError, a server killed mid-call, a timeout cancelled on the server, a tool list that
changes mid-run."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowFailureError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities import mcp_tools
from activities.mcp_tools import McpTools
from activities.tools import default_registry
from agentrun.client import DecisionRefused
from agentrun.contracts import ListMcpToolsInput
from agentrun.db.models import RunMcpTool
from agentrun.mcp.config import McpServerConfig
from agentrun.mcp.pool import McpPool
from agentrun.protocol.events import EventType
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from starter.api import cancel_run, decide
from tests.conftest import next_event, process_running, start_input
from tests.mcp_support import calls, http_server, stdio_server, wait_for_call, wait_until
from tests.store_helpers import run_tool_calls
from worker import build_worker
from workflows.agent import AgentRunWorkflow


@pytest.fixture(scope="module")
def http_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mcp-http") / "calls.jsonl"


@pytest.fixture(scope="module")
def http_url(http_log: Path) -> Iterator[str]:
    with http_server(http_log) as url:
        yield url


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "calls.jsonl"


@pytest.fixture
def hold(tmp_path: Path) -> Path:
    return tmp_path / "hold"


@pytest.fixture
def servers(
    log: Path, hold: Path, http_url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, McpServerConfig]:
    monkeypatch.setenv("AGENTRUN_TEST_MCP_SECRET", "hunter2-is-not-a-password")
    secret = {"MCP_TEST_SECRET": "env:AGENTRUN_TEST_MCP_SECRET"}
    return {
        "notes": stdio_server("notes", log, hold),
        "web": McpServerConfig(name="web", transport="http", url=http_url),
        # The same server, trusted by the operator: its tools may run unasked.
        "trusted": stdio_server("trusted", log, hold, approval="auto", max_attempts=2),
        "quick": stdio_server("quick", log, hold, approval="auto", timeout_s=1),
        "fragile": stdio_server("fragile", log, hold, approval="auto", max_attempts=1),
        "leaky": stdio_server("leaky", log, approval="auto", env=secret),
        "private": stdio_server("private", log, tenants=["acme"]),
    }


@pytest.fixture
async def pool(servers: dict[str, McpServerConfig]) -> AsyncIterator[McpPool]:
    p = McpPool(servers)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def mcp_worker(
    temporal_env: WorkflowEnvironment, settings: Settings, repo: Repository, pool: McpPool
) -> AsyncIterator[None]:
    w = build_worker(
        temporal_env.client,
        settings,
        repo,
        graceful_shutdown=timedelta(seconds=1),
        mcp_pool=pool,
    )
    async with w:
        yield


async def run_to_end(
    env: WorkflowEnvironment, settings: Settings, run_id: str, prompt: str, **config: object
) -> object:
    handle = await env.client.start_workflow(
        AgentRunWorkflow.run,
        start_input(run_id, prompt, tools=[], **config),
        id=run_id,
        task_queue=settings.task_queue,
    )
    return await asyncio.wait_for(handle.result(), 60)


async def recorded(repo: Repository, run_id: str) -> dict[str, RunMcpTool]:
    async with repo.session() as db:
        rows = await db.execute(select(RunMcpTool).where(RunMcpTool.run_id == run_id))
        return {r.name: r for r in rows.scalars()}


@pytest.mark.parametrize("server", ["notes", "web"])
async def test_tools_are_listed_recorded_offered_and_called(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    mcp_worker: None,
    run_id: str,
    log: Path,
    http_log: Path,
    server: str,
) -> None:
    prompt = f"look it up {run_id}"
    call_id = f"call-{uuid.uuid4().hex[:8]}"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec(f"{server}__lookup", {"word": "durable"}, id=call_id)]),
            Reply(text="Looked up."),
        ],
    )
    result = await run_to_end(
        temporal_env, settings, run_id, prompt, mcp_servers=[server], approval="allow_safe"
    )
    assert result.status == "DONE", result.error  # type: ignore[attr-defined]
    tools = await recorded(repo, run_id)
    assert sorted(tools) == [f"{server}__{t}" for t in ("fail", "lookup", "save_note", "slow")]
    lookup = tools[f"{server}__lookup"]
    assert lookup.server == server and lookup.tool == "lookup"
    assert lookup.annotations.get("readOnlyHint") is True
    assert lookup.input_schema["required"] == ["word"]
    # allow_safe: the read-only tool runs unasked, the destructive and unannotated ones ask.
    assert lookup.approval == "auto"
    assert {tools[f"{server}__{t}"].approval for t in ("save_note", "fail", "slow")} == {
        "needs_approval"
    }
    # The model was offered the recorded tools with their schemas.
    offered = model_server.requests_for(prompt)[0].body["tools"]
    by_name = {t["function"]["name"]: t["function"] for t in offered}
    assert by_name[f"{server}__lookup"]["parameters"]["properties"]["word"]["type"] == "string"
    assert "test dictionary" in by_name[f"{server}__lookup"]["description"]
    [call] = await run_tool_calls(repo, run_id)
    assert (call.status, call.result) == ("succeeded", "durable: a word of 7 letters")
    # The tool_call_id reached the server as the idempotency key in the request's _meta.
    seen = calls(http_log if server == "web" else log, "lookup", call_id)
    assert [c["arguments"] for c in seen] == [{"word": "durable"}]


async def test_a_call_with_approval_and_edits(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    mcp_worker: None,
    run_id: str,
    log: Path,
) -> None:
    prompt = f"save a note {run_id}"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("notes__save_note", {"text": "draft"}, id="call_n")]),
            Reply(text="Saved."),
        ],
    )
    handle = await temporal_env.client.start_workflow(
        AgentRunWorkflow.run,
        start_input(run_id, prompt, tools=[], mcp_servers=[{"server": "notes"}]),
        id=run_id,
        task_queue=settings.task_queue,
    )
    asked = await next_event(repo, run_id, EventType.TOOL_APPROVAL_REQUESTED)
    assert asked.data["name"] == "notes__save_note"
    assert calls(log, "save_note") == []  # nothing runs before the decision
    # Edits are checked against the input schema recorded at open.
    with pytest.raises(DecisionRefused, match="schema"):
        await decide(
            temporal_env.client, run_id, "call_n", "approve_with_edits", arguments={"text": 5}
        )
    await decide(
        temporal_env.client,
        run_id,
        "call_n",
        "approve_with_edits",
        arguments={"text": "final"},
        decided_by="alice",
    )
    result = await asyncio.wait_for(handle.result(), 60)
    assert result.status == "DONE"
    [call] = await run_tool_calls(repo, run_id)
    assert (call.result, call.decision) == ("saved: final", "approve_with_edits")
    assert [c["arguments"] for c in calls(log, "save_note", "call_n")] == [{"text": "final"}]


async def test_an_is_error_result_is_an_error_the_model_sees(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    mcp_worker: None,
    run_id: str,
) -> None:
    prompt = f"try failing {run_id}"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("trusted__fail", {"reason": "no disk"}, id="c_f")]),
            Reply(text="It failed."),
        ],
    )
    result = await run_to_end(
        temporal_env, settings, run_id, prompt, mcp_servers=["trusted"], approval="skip_all"
    )
    assert result.status == "DONE"  # type: ignore[attr-defined]
    [call] = await run_tool_calls(repo, run_id)
    assert call.is_error and call.status == "error"
    assert call.result == "error: Error executing tool fail: refused: no disk"
    second = model_server.requests_for(prompt)[1].body["messages"]
    assert any(m["role"] == "tool" and "refused: no disk" in m["content"] for m in second)


async def test_a_server_killed_mid_call_is_restarted_and_the_call_retried(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    mcp_worker: None,
    run_id: str,
    log: Path,
    hold: Path,
) -> None:
    prompt = f"slow and killed {run_id}"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("trusted__slow", {"seconds": 0}, id="c_s")]),
            Reply(text="Done waiting."),
        ],
    )
    hold.touch()
    handle = await temporal_env.client.start_workflow(
        AgentRunWorkflow.run,
        start_input(run_id, prompt, tools=[], mcp_servers=["trusted"], approval="skip_all"),
        id=run_id,
        task_queue=settings.task_queue,
    )
    first = await wait_for_call(log, "slow", "c_s")
    os.kill(first["pid"], signal.SIGKILL)
    hold.unlink()
    result = await asyncio.wait_for(handle.result(), 60)
    assert result.status == "DONE"
    [call] = await run_tool_calls(repo, run_id)
    assert (call.status, call.result, call.attempts) == ("succeeded", "waited 0.0s", 2)
    seen = calls(log, "slow", "c_s")
    assert len(seen) == 2 and seen[0]["pid"] != seen[1]["pid"]  # a new server process


async def test_a_server_that_dies_past_its_attempts_is_reported_with_its_stderr(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    mcp_worker: None,
    run_id: str,
    log: Path,
    hold: Path,
) -> None:
    prompt = f"slow and killed for good {run_id}"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("fragile__slow", {"seconds": 0}, id="c_k")]),
            Reply(text="It broke."),
        ],
    )
    hold.touch()
    handle = await temporal_env.client.start_workflow(
        AgentRunWorkflow.run,
        start_input(run_id, prompt, tools=[], mcp_servers=["fragile"], approval="skip_all"),
        id=run_id,
        task_queue=settings.task_queue,
    )
    first = await wait_for_call(log, "slow", "c_k")
    os.kill(first["pid"], signal.SIGKILL)
    result = await asyncio.wait_for(handle.result(), 60)
    assert result.status == "DONE"
    [call] = await run_tool_calls(repo, run_id)
    assert call.is_error and call.attempts == 1
    assert "fragile__slow failed after 1 attempts: MCP server 'fragile'" in call.result
    assert f"notes server starting (pid {first['pid']})" in call.result  # its stderr tail


async def test_a_call_over_its_timeout_is_cancelled_on_the_server(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    mcp_worker: None,
    run_id: str,
    log: Path,
) -> None:
    prompt = f"too slow {run_id}"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("quick__slow", {"seconds": 30}, id="c_t")]),
            Reply(text="Gave up."),
        ],
    )
    result = await run_to_end(
        temporal_env, settings, run_id, prompt, mcp_servers=["quick"], approval="skip_all"
    )
    assert result.status == "DONE"  # type: ignore[attr-defined]
    [call] = await run_tool_calls(repo, run_id)
    assert call.is_error and "quick__slow timed out after 1s" in call.result
    # notifications/cancelled reached the server: its handler was cancelled.
    await wait_until(lambda: calls(log, "slow-cancelled", "c_t"), "the server's cancel")


async def test_a_tool_list_that_changes_mid_run_does_not_change_the_run(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    mcp_worker: None,
    pool: McpPool,
    run_id: str,
    log: Path,
    tmp_path: Path,
) -> None:
    extra = tmp_path / "extra"
    config = stdio_server("notes", log, env={"MCP_TEST_EXTRA_FILE": str(extra)})
    pool.servers["notes"] = config
    prompt = f"changing list {run_id}"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("notes__save_note", {"text": "a"}, id="c_a")]),
            Reply(tool_calls=[ToolCallSpec("notes__extra", {}, id="c_x")]),
            Reply(text="Done."),
        ],
    )
    handle = await temporal_env.client.start_workflow(
        AgentRunWorkflow.run,
        start_input(run_id, prompt, tools=[], mcp_servers=["notes"]),
        id=run_id,
        task_queue=settings.task_queue,
    )
    await next_event(repo, run_id, EventType.TOOL_APPROVAL_REQUESTED)
    # Mid-run the server changes: restarted, it now offers `extra`.
    extra.touch()
    started = calls(log, "(started)")[-1]
    os.kill(started["pid"], signal.SIGKILL)
    await wait_until(lambda: not process_running(started["pid"]), "the server to die")
    assert "extra" in {t.name for t in await pool.list_tools("notes")}
    await decide(temporal_env.client, run_id, "c_a", "approve")
    result = await asyncio.wait_for(handle.result(), 60)
    assert result.status == "DONE"
    assert "notes__extra" not in await recorded(repo, run_id)
    by_id = {c.tool_call_id: c for c in await run_tool_calls(repo, run_id)}
    assert by_id["c_a"].result == "saved: a"
    assert by_id["c_x"].is_error and "not enabled for this run" in by_id["c_x"].result
    for request in model_server.requests_for(prompt):
        assert "notes__extra" not in {t["function"]["name"] for t in request.body["tools"]}
    # The list step run again (a retry, another worker) gets the recorded list back.
    again = await ActivityEnvironment().run(
        McpTools(repo, pool, default_registry(), {}).list_mcp_tools,
        ListMcpToolsInput(run_id=run_id),
    )
    assert sorted(t.name for t in again) == sorted(await recorded(repo, run_id))
    assert "notes__extra" not in {t.name for t in again}


async def test_a_run_naming_an_unknown_server_or_tool_fails_with_the_reason(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    mcp_worker: None,
    run_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(WorkflowFailureError) as err:
        await run_to_end(temporal_env, settings, run_id, "hi", mcp_servers=["nowhere"])
    assert "no MCP server 'nowhere' is declared on this worker" in str(err.value.cause)
    run = await repo.get_run(run_id)
    assert run.status == "FAILED"
    other = f"{run_id}-2"
    with pytest.raises(WorkflowFailureError) as err:
        await run_to_end(
            temporal_env, settings, other, "hi", mcp_servers=[{"server": "notes", "tools": ["x"]}]
        )
    assert "offers no tool 'x'; it offers: fail, lookup, save_note, slow" in str(err.value.cause)
    # A run may not loosen an MCP tool's approval below its floor.
    third = f"{run_id}-3"
    with pytest.raises(WorkflowFailureError) as err:
        await run_to_end(
            temporal_env,
            settings,
            third,
            "hi",
            mcp_servers=["notes"],
            approval_overrides={"notes__save_note": "auto"},
        )
    assert "would run notes__save_note without approval" in str(err.value.cause)
    # A server the operator offers to some tenants only.
    with pytest.raises(WorkflowFailureError) as err:
        await run_to_end(temporal_env, settings, f"{run_id}-5", "hi", mcp_servers=["private"])
    assert "MCP server 'private' is not offered to tenant 'default'" in str(err.value.cause)
    # A list too big to carry in the run is refused, naming the way out.
    monkeypatch.setattr(mcp_tools, "MAX_LIST_CHARS", 1_000)
    with pytest.raises(WorkflowFailureError) as err:
        await run_to_end(temporal_env, settings, f"{run_id}-4", "hi", mcp_servers=["notes"])
    assert "choose fewer with the server's `tools`" in str(err.value.cause)


async def test_a_cancelled_run_cancels_its_call_on_the_server(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    mcp_worker: None,
    run_id: str,
    log: Path,
    hold: Path,
) -> None:
    prompt = f"slow then cancelled {run_id}"
    model_server.script(
        prompt, [Reply(tool_calls=[ToolCallSpec("trusted__slow", {"seconds": 0}, id="c_c")])]
    )
    hold.touch()
    await temporal_env.client.start_workflow(
        AgentRunWorkflow.run,
        start_input(run_id, prompt, tools=[], mcp_servers=["trusted"], approval="skip_all"),
        id=run_id,
        task_queue=settings.task_queue,
    )
    await wait_for_call(log, "slow", "c_c")
    answer = await cancel_run(temporal_env.client, run_id, reason="enough")
    assert answer.status == "CANCELED"
    await wait_until(lambda: calls(log, "slow-cancelled", "c_c"), "the server's cancel")
    [call] = await run_tool_calls(repo, run_id)
    assert call.is_error and call.result.startswith("cancelled")


async def test_secrets_given_to_a_server_never_reach_the_record(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    mcp_worker: None,
    run_id: str,
) -> None:
    prompt = f"leak it {run_id}"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("leaky__lookup", {"word": "MCP_TEST_SECRET"})]),
            Reply(text="Done."),
        ],
    )
    result = await run_to_end(
        temporal_env, settings, run_id, prompt, mcp_servers=["leaky"], approval="allow_safe"
    )
    assert result.status == "DONE"  # type: ignore[attr-defined]
    [call] = await run_tool_calls(repo, run_id)
    assert call.result == "the secret is [redacted:AGENTRUN_TEST_MCP_SECRET]"
    run = await repo.get_run(run_id)
    assert "hunter2" not in str(run.config)
