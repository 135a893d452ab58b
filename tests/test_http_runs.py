"""The HTTP API against a real uvicorn server, real httpx and httpx-sse, the session's Temporal
dev server and PostgreSQL, a worker in this process and the offline model: the whole life of a
run (start, stream, approve, finish), resuming a stream mid-way with Last-Event-ID, the JSON
page of events, heartbeats, cancel, a client-side result and the session's transcript."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse
from temporalio.worker import Worker

from agentrun.protocol.events import EventType
from agentrun.protocol.statuses import RunStatus
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from tests.conftest import bash_call
from tests.http_support import BOUND, Keys, assert_problem, bearer, data, sse_events, start

pytest_plugins = ["tests.http_fixtures"]


async def test_the_whole_life_of_a_run_over_http(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"http life {run_id}"
    model_server.script(prompt, [bash_call("echo from-http", "call_h"), Reply(text="All done.")])
    started = await start(http, keys.full, prompt, config={"workspace": str(tmp_path)})
    rid, session = started["run_id"], started["session_id"]
    assert started["status"] == RunStatus.QUEUED and started["links"]["events"].endswith("/events")

    head = await sse_events(
        http, rid, keys.full, until_type=EventType.TOOL_APPROVAL_REQUESTED.value
    )
    asked = data(head[-1])
    assert asked["tool_call_id"] == "call_h" and json.loads(asked["arguments"]) == {
        "command": "echo from-http"
    }
    assert [int(e.id) for e in head] == list(range(1, len(head) + 1))

    view = (await http.get(f"/v1/runs/{rid}", headers=bearer(keys.full))).json()
    assert view["status"] == RunStatus.WAITING_APPROVAL and view["session_id"] == session
    [pending] = view["pending"]
    assert (pending["tool_call_id"], pending["kind"]) == ("call_h", "approval")
    assert pending["arguments_sha256"] == asked["arguments_sha256"]
    assert json.loads(pending["arguments"]) == {"command": "echo from-http"}

    r = await http.post(
        f"/v1/runs/{rid}/tool-calls/call_h/decision",
        json={"decision": "approve", "arguments_sha256": pending["arguments_sha256"]},
        headers=bearer(keys.full),
    )
    assert r.status_code == 200, r.text
    assert r.json()["decided_by"] == keys.full_name and r.json()["decision"] == "approve"

    # From where the first stream stopped to the end: the stream closes after the last event.
    rest = await sse_events(http, rid, keys.full, last_event_id=head[-1].id)
    assert [int(e.id) for e in rest] == list(range(len(head) + 1, len(head) + len(rest) + 1))
    types = [e.event for e in rest]
    assert EventType.TOOL_DECIDED in types and EventType.TOOL_RESULT in types
    assert rest[-1].event == EventType.RUN_STATUS and data(rest[-1])["status"] == RunStatus.DONE
    result = next(data(e) for e in rest if e.event == EventType.TOOL_RESULT)
    assert "from-http" in result["result"]

    done = (await http.get(f"/v1/runs/{rid}", headers=bearer(keys.full))).json()
    assert done["status"] == RunStatus.DONE and done["final_text"] == "All done."
    assert done["pending"] == [] and done["usage"]["turns"] == 2
    assert done["usage"]["tool_calls"] == 1 and done["usage"]["llm_calls"] == 2

    transcript = (
        await http.get(f"/v1/sessions/{session}/messages", headers=bearer(keys.full))
    ).json()
    roles = [m["role"] for m in transcript["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant"], roles
    [call] = transcript["messages"][1]["tool_calls"]
    assert (call["tool_call_id"], call["decision"], call["decided_by"]) == (
        "call_h",
        "approve",
        keys.full_name,
    )
    assert "from-http" in (call["result"] or "")

    listed = (await http.get("/v1/runs", headers=bearer(keys.full))).json()
    assert rid in [row["run_id"] for row in listed["runs"]]
    sessions = (await http.get("/v1/sessions", headers=bearer(keys.full))).json()["sessions"]
    assert [(s["session_id"], s["title"]) for s in sessions] == [(session, prompt)]
    theirs = (await http.get("/v1/sessions", headers=bearer(keys.other_tenant))).json()
    assert theirs["sessions"] == []


async def test_resume_mid_stream_yields_exactly_the_remaining_events(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"http resume {run_id}"
    model_server.script(prompt, [Reply(text="word " * 120, delay_s=0.01)])
    rid = (await start(http, keys.full, prompt, config={"tools": []}))["run_id"]
    first = await sse_events(http, rid, keys.full, stop_after=3)
    assert [e.id for e in first] == ["1", "2", "3"]
    # The connection is gone; the run goes on. A reconnect with Last-Event-ID: 3 gets the rest.
    rest = await sse_events(http, rid, keys.full, last_event_id="3")
    stored = await repo.read_events(rid, 0, 10_000)
    assert [int(e.id) for e in first + rest] == [row.seq for row in stored]
    assert [e.event for e in first + rest] == [row.type for row in stored]
    assert rest[-1].event == EventType.RUN_STATUS and data(rest[-1])["status"] == RunStatus.DONE
    # ?after= does the same for a client that cannot set the header; the header wins.
    via_query = await sse_events(http, rid, keys.full, params={"after": str(len(stored) - 2)})
    assert [int(e.id) for e in via_query] == [len(stored) - 1, len(stored)]
    both = await sse_events(http, rid, keys.full, last_event_id=str(len(stored) - 1),
                            params={"after": "0"})  # fmt: skip
    assert [int(e.id) for e in both] == [len(stored)]


async def test_events_as_a_json_page_and_bad_cursors(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"http page {run_id}"
    model_server.script(prompt, [Reply(text="Paged.")])
    rid = (await start(http, keys.full, prompt, config={"tools": []}))["run_id"]
    await sse_events(http, rid, keys.full)  # to the end
    json_headers = {**bearer(keys.full), "Accept": "application/json"}
    url = f"/v1/runs/{rid}/events"
    seen: list[int] = []
    after, ended = 0, False
    while not ended:
        page = await http.get(url, params={"after": after, "limit": 2}, headers=json_headers)
        assert page.headers["content-type"].startswith("application/json")
        body = page.json()
        seen += [e["seq"] for e in body["events"]]
        assert len(body["events"]) <= 2
        after, ended = body["next_after"], body["ended"]
        assert len(seen) < 100
    assert seen == list(range(1, len(seen) + 1))
    assert body["events"][-1]["type"] == EventType.RUN_STATUS

    for bad in ("abc", "-1", "1.5", "", "99999999999999999999999"):
        r = await http.get(url, headers={**bearer(keys.full), "Last-Event-ID": bad})
        assert_problem(r, 400, "Last-Event-ID")
    assert_problem(await http.get(url, params={"after": "x"}, headers=json_headers), 400, "after")


async def test_heartbeats_keep_an_idle_stream_alive(
    api: str,
    keys: Keys,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"http idle {run_id}"
    model_server.script(prompt, [bash_call("echo idle", "call_i"), Reply(text="Idle.")])
    async with httpx.AsyncClient(base_url=api, timeout=BOUND) as http:
        rid = (await start(http, keys.full, prompt, config={"workspace": str(tmp_path)}))["run_id"]
        await sse_events(http, rid, keys.full, until_type=EventType.TOOL_APPROVAL_REQUESTED.value)

        async def pings() -> int:
            count = 0
            async with http.stream(
                "GET", f"/v1/runs/{rid}/events", headers=bearer(keys.full)
            ) as response:
                async for line in response.aiter_lines():
                    if line.startswith(":"):
                        count += 1
                        if count == 2:
                            return count
            return count

        # The run waits for a person: nothing but heartbeats (every 0.5 s here) after the replay.
        assert await asyncio.wait_for(pings(), 20) == 2
        r = await http.post(f"/v1/runs/{rid}/cancel", json={"reason": "idle"},
                            headers=bearer(keys.full))  # fmt: skip
        assert r.status_code == 200 and r.json()["status"] == RunStatus.CANCELED


async def test_cancel_answers_the_final_status(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"http cancel {run_id}"
    model_server.script(prompt, [Reply(text="slow " * 500, delay_s=0.02)])
    rid = (await start(http, keys.full, prompt, config={"tools": []}))["run_id"]
    await sse_events(http, rid, keys.full, until_type=EventType.MESSAGE_DELTA.value)
    r = await http.post(f"/v1/runs/{rid}/cancel", headers=bearer(keys.full))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == RunStatus.CANCELED and r.json()["run_id"] == rid
    assert (await repo.get_run(rid)).status == RunStatus.CANCELED
    again = await http.post(f"/v1/runs/{rid}/cancel", json={}, headers=bearer(keys.full))
    assert again.json()["status"] == RunStatus.CANCELED and "already" in again.json()["message"]
    # The stream of a cancelled run replays and ends.
    events = await sse_events(http, rid, keys.full)
    assert data(events[-1])["status"] == RunStatus.CANCELED


async def test_a_client_side_result_over_http(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"http client tool {run_id}"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("get_weather", {"city": "Oslo"}, id="call_w")]),
            Reply(text="Sunny."),
        ],
    )
    tool = {"name": "get_weather", "parameters": {"type": "object"}}
    config = {"tools": [], "client_tools": [tool]}
    rid = (await start(http, keys.writer, prompt, config=config))["run_id"]
    await sse_events(http, rid, keys.writer, until_type=EventType.TOOL_RESULT_REQUESTED.value)
    view = (await http.get(f"/v1/runs/{rid}", headers=bearer(keys.writer))).json()
    assert [(p["tool_call_id"], p["kind"]) for p in view["pending"]] == [
        ("call_w", "client_result")
    ]
    url = f"/v1/runs/{rid}/tool-calls"
    unknown = await http.post(
        f"{url}/call_x/result", json={"result": 1}, headers=bearer(keys.writer)
    )
    assert_problem(unknown, 404)
    # A writer cannot decide (approve scope), and a decision is the wrong kind of answer here.
    wrong = await http.post(f"{url}/call_w/decision", json={"decision": "approve"},
                            headers=bearer(keys.full))  # fmt: skip
    assert_problem(wrong, 409)
    r = await http.post(f"{url}/call_w/result", json={"result": {"sky": "sunny"}},
                        headers=bearer(keys.writer))  # fmt: skip
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    events = await sse_events(http, rid, keys.writer)
    assert data(events[-1])["status"] == RunStatus.DONE
    late = await http.post(f"{url}/call_w/result", json={"result": 2}, headers=bearer(keys.writer))
    assert_problem(late, 409)


async def test_a_stream_for_a_run_that_is_just_starting_waits_for_it(
    http: httpx.AsyncClient, keys: Keys, worker: Worker, model_server: OfflineModelServer,
    run_id: str,
) -> None:  # fmt: skip
    prompt = f"http early {run_id}"
    model_server.script(prompt, [Reply(text="Early.")])
    rid = (await start(http, keys.full, prompt, config={"tools": []}))["run_id"]
    # Straight after the start, before any worker may have opened it.
    async with aconnect_sse(
        http, "GET", f"/v1/runs/{rid}/events", headers=bearer(keys.full)
    ) as source:
        got = [e async for e in source.aiter_sse() if e.event not in ("", "message")]
    assert got[0].id == "1" and data(got[-1])["status"] == RunStatus.DONE


async def test_the_listen_connection_killed_mid_stream_loses_and_repeats_nothing(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    """pg_terminate_backend on the hub's LISTEN connection while an SSE client reads: the
    hub reconnects and re-reads from its cursor, the client's stream goes on with no gap or
    duplicate."""
    from sqlalchemy import text

    prompt = f"http listen killed {run_id}"
    model_server.script(prompt, [Reply(text="token " * 300, chunk_chars=6, delay_s=0.01)])
    rid = (await start(http, keys.full, prompt, config={"tools": []}))["run_id"]
    hub = repo.event_hub()
    got: list[int] = []
    killed: list[int] = []

    async def read() -> None:
        url = f"/v1/runs/{rid}/events"
        async with aconnect_sse(http, "GET", url, headers=bearer(keys.full)) as source:
            async for sse in source.aiter_sse():
                if not sse.event or sse.event == "message":
                    continue
                got.append(int(sse.id))
                if len(got) == 5:
                    pid = hub.stats().listener_pid
                    assert pid is not None
                    async with repo.engine.begin() as conn:
                        await conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                    killed.append(pid)

    await asyncio.wait_for(read(), BOUND)
    stored = [row.seq for row in await repo.read_events(rid, 0, 10_000)]
    assert killed and got == stored, (len(got), len(stored))
    assert (await repo.get_run(rid)).status == RunStatus.DONE

    async def reconnected() -> None:
        while hub.stats().listener_pid in (None, killed[0]):  # noqa: ASYNC110 - polled state
            await asyncio.sleep(0.05)

    await asyncio.wait_for(reconnected(), BOUND)
