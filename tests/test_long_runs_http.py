"""A run that continues-as-new, seen through the HTTP API: its view, its approval (decided in
its second execution) and its event stream are those of one run (issue 16 item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.client import run_histories
from agentrun.protocol.events import EventType
from agentrun.protocol.statuses import RunStatus
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from tests.conftest import bash_call
from tests.http_support import Keys, bearer, data, sse_events, start

pytest_plugins = ["tests.http_fixtures"]


async def test_a_continued_run_over_http(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    temporal_env: WorkflowEnvironment,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"http long {run_id}"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("calculator", {"expression": "6*7"}, id="c1")]),
            bash_call("echo second", "call_2"),
            Reply(text="Both done."),
        ],
    )
    config = {"workspace": str(tmp_path), "continue_as_new_after_turns": 1}
    rid = (await start(http, keys.full, prompt, config=config))["run_id"]
    head = await sse_events(
        http, rid, keys.full, until_type=EventType.TOOL_APPROVAL_REQUESTED.value
    )
    # The approval is asked for in the run's second execution.
    assert len(await run_histories(temporal_env.client, rid)) == 2

    view = (await http.get(f"/v1/runs/{rid}", headers=bearer(keys.full))).json()
    assert view["status"] == RunStatus.WAITING_APPROVAL
    [pending] = view["pending"]
    assert pending["tool_call_id"] == "call_2" and pending["turn"] == 2
    assert view["usage"]["turns"] == 2 and view["usage"]["tool_calls"] == 2  # carried + own
    r = await http.post(
        f"/v1/runs/{rid}/tool-calls/call_2/decision",
        json={"decision": "approve", "arguments_sha256": pending["arguments_sha256"]},
        headers=bearer(keys.full),
    )
    assert r.status_code == 200, r.text

    rest = await sse_events(http, rid, keys.full, last_event_id=head[-1].id)
    events = [*head, *rest]
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
    statuses = [data(e)["status"] for e in events if e.event == EventType.RUN_STATUS]
    assert statuses == ["QUEUED", "RUNNING", "WAITING_APPROVAL", "RUNNING", "DONE"]
    results = [data(e) for e in events if e.event == EventType.TOOL_RESULT]
    assert [x["tool_call_id"] for x in results] == ["c1", "call_2"]
    assert results[0]["result"] == "42" and "second" in results[1]["result"]
    done = (await http.get(f"/v1/runs/{rid}", headers=bearer(keys.full))).json()
    assert done["status"] == RunStatus.DONE and done["final_text"] == "Both done."
    assert done["usage"]["turns"] == 3 and done["usage"]["tool_calls"] == 2
    assert json.loads(pending["arguments"]) == {"command": "echo second"}
    listed = (await http.get("/v1/runs", headers=bearer(keys.full))).json()["runs"]
    assert [row["run_id"] for row in listed].count(rid) == 1
