"""Sub-agents over the HTTP API (README Sub-agents): a tenant's run delegates; the child is the
same tenant's run (its key sees it and decides its calls), another tenant's key gets 404."""

from __future__ import annotations

import uuid

import httpx
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.contracts.subagents import child_run_id
from agentrun.protocol.events import EventType
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from tests.conftest import next_event
from tests.http_support import Keys, bearer, start
from tests.store_helpers import run_tool_calls
from tests.test_subagents import _delegate
from workflows.agent import AgentRunWorkflow

pytest_plugins = ["tests.http_fixtures"]


async def test_a_tenants_child_run_is_seen_and_decided_with_its_key_only(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    temporal_env: WorkflowEnvironment,
) -> None:
    prompt, task = f"orchestrate over http {uuid.uuid4()}", f"ask first ({uuid.uuid4()})"
    model_server.script(prompt, [Reply(tool_calls=[_delegate(task, "c1")]), Reply(text="Done.")])
    model_server.script(
        task,
        [
            Reply(tool_calls=[ToolCallSpec("calculator", {"expression": "3*3"}, id="c2")]),
            Reply(text="9"),
        ],
    )
    config = {
        "tools": [],
        "subagents": {"researcher": {"tools": ["calculator"], "approval": "require_all"}},
    }
    run_id = (await start(http, keys.full, prompt, config=config))["run_id"]
    child = child_run_id(run_id, "researcher", "c1")
    waiting = await next_event(repo, run_id, EventType.SUBRUN_WAITING)
    assert (waiting.data["subrun_id"], waiting.data["tool_call_id"]) == (child, "c2")

    seen = await http.get(f"/v1/runs/{child}", headers=bearer(keys.full))
    assert seen.status_code == 200, seen.text
    assert [p["tool_call_id"] for p in seen.json()["pending"]] == ["c2"]
    assert (await repo.get_run(child)).tenant == keys.tenant
    hidden = await http.get(f"/v1/runs/{child}", headers=bearer(keys.other_tenant))
    assert hidden.status_code == 404
    refused = await http.post(
        f"/v1/runs/{child}/tool-calls/c2/decision",
        json={"decision": "approve"},
        headers=bearer(keys.other_tenant),
    )
    assert refused.status_code == 404

    decided = await http.post(
        f"/v1/runs/{child}/tool-calls/c2/decision",
        json={"decision": "approve", "arguments_sha256": waiting.data["arguments_sha256"]},
        headers=bearer(keys.full),
    )
    assert decided.status_code == 200, decided.text
    handle = temporal_env.client.get_workflow_handle(run_id)
    await handle.result()
    view = await handle.query(AgentRunWorkflow.status)
    assert view.status == "DONE" and view.waiting_on == []
    assert [c.result for c in await run_tool_calls(repo, run_id)] == ["9"]
