"""Record histories of runs that crossed a continue-as-new into tests/histories/<label>/, one JSON
file per execution (`<scenario>.<n>.json`, n = 1 for the first execution).

    python -m tests.histories.record_long v6-long

As tests/histories/record.py (whose helpers these scenarios use), against real servers and an
in-process worker built from the code as it is now; tests/test_replay.py replays every file.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from agentrun.client import run_histories
from agentrun.contracts import CancelAnswer, CancelRequest, RecordedDecision, ToolDecision
from agentrun.db.migrate import upgrade
from agentrun.protocol.events import arguments_sha256
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
from tests.histories.record import HERE, _bash, _closed, _start
from worker import build_worker
from workflows.agent import AgentRunWorkflow

Scenario = Callable[[Client, str, OfflineModelServer, str], Awaitable[WorkflowHandle[Any, Any]]]


async def _pending(client: Client, rid: str, call_id: str, timeout: float = 30) -> Any:
    """The call once it waits, asked of whichever execution is current (workflow id only)."""

    async def poll() -> Any:
        while True:
            view = await client.get_workflow_handle(rid).query(AgentRunWorkflow.status)
            for p in view.pending:
                if p.tool_call_id == call_id:
                    return p
            await asyncio.sleep(0.1)

    return await asyncio.wait_for(poll(), timeout)


async def crossed(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    """Five turns of a tool call and an answer, continuing-as-new every two turns."""
    prompt = f"crossed {rid}"
    calls = [
        Reply(tool_calls=[ToolCallSpec("calculator", {"expression": f"{n}*2"}, id=f"c{n}")])
        for n in range(4)
    ]
    model.script(prompt, [*calls, Reply(text="Counted.")])
    h = await _start(client, tq, rid, prompt, continue_as_new_after_turns=2)
    await client.get_workflow_handle(rid).result()
    return h


async def approvals_crossed(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    """An approval by update in the first execution, and one signalled before its call existed
    (carried over to the second)."""
    prompt = f"approvals crossed {rid}"
    model.script(
        prompt,
        [_bash("echo a", "call_a"), _bash("echo b", "call_b"), Reply(text="Ran both.")],
    )
    h = await _start(client, tq, rid, prompt, continue_as_new_after_turns=1)
    current = client.get_workflow_handle(rid)
    a = await _pending(client, rid, "call_a")
    early = ToolDecision(
        tool_call_id="call_b",
        decision="approve",
        arguments_sha256=arguments_sha256(json.dumps({"command": "echo b"})),
        decided_by="recorder",
    )
    await current.signal("tool_decision", early)
    await current.execute_update(
        "decide_tool_call",
        ToolDecision(
            tool_call_id="call_a",
            decision="approve",
            arguments_sha256=a.arguments_sha256,
            decided_by="recorder",
        ),
        result_type=RecordedDecision,
    )
    await current.result()
    return h


async def cancel_crossed(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    """Cancelled by update while it waits for an approval in its second execution."""
    prompt = f"cancel crossed {rid}"
    model.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("calculator", {"expression": "1+1"}, id="c1")]),
            _bash("echo never", "call_x"),
            Reply(text="never"),
        ],
    )
    h = await _start(client, tq, rid, prompt, continue_as_new_after_turns=1)
    await _pending(client, rid, "call_x")
    current = client.get_workflow_handle(rid)
    await current.execute_update(
        "cancel", CancelRequest(reason="enough", requested_by="recorder"), result_type=CancelAnswer
    )
    await _closed(current)
    return h


async def waiting_crossed(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    """Recorded while its second execution waits for an approval: a long run in flight at an
    upgrade (terminated once recorded)."""
    prompt = f"waiting crossed {rid}"
    model.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("calculator", {"expression": "2+2"}, id="c1")]),
            _bash("echo waiting", "call_w"),
            Reply(text="Done after the wait."),
        ],
    )
    h = await _start(client, tq, rid, prompt, continue_as_new_after_turns=1)
    await _pending(client, rid, "call_w")
    return h


SCENARIOS: dict[str, Scenario] = {
    "crossed": crossed,
    "approvals_crossed": approvals_crossed,
    "cancel_crossed": cancel_crossed,
    "waiting_crossed": waiting_crossed,
}


async def _record_all(client: Client, tq: str, model: OfflineModelServer, out: Path) -> None:
    for name, scenario in SCENARIOS.items():
        rid = f"rec-{name}-{uuid.uuid4().hex[:8]}"
        await asyncio.wait_for(scenario(client, tq, model, rid), 120)
        histories = await run_histories(client, rid)
        assert len(histories) > 1, f"{name} did not continue-as-new"
        for n, history in enumerate(histories, 1):
            (out / f"{name}.{n}.json").write_text(history.to_json())
        print(f"recorded {name}: {[len(h.events) for h in histories]} events")
        if name == "waiting_crossed":
            await client.get_workflow_handle(rid).terminate("recorded")


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
            worker_versioning=False,
        )
        try:
            async with build_worker(
                env.client, settings, repo, graceful_shutdown=timedelta(seconds=1)
            ):
                await _record_all(env.client, tq, model, out)
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
        sys.exit("usage: python -m tests.histories.record_long <label>")
    asyncio.run(record(HERE / args[0]))


if __name__ == "__main__":
    main()
