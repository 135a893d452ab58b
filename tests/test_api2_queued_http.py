"""Following a queued message's run over HTTP (README "Sessions and double-texting"): its
events answer before it exists (an empty JSON page with status QUEUED; an SSE stream that stays
open and delivers the run's events once it starts), and a message withdrawn while a stream
waits ends that stream with a final `error` event; asked after, 404 `message-cancelled`."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
from temporalio.worker import Worker

from agentrun.protocol.events import EventType
from agentrun.protocol.statuses import RunStatus
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply
from tests.double_texting_support import ended
from tests.http_support import BOUND, Keys, assert_problem, bearer
from tests.test_double_texting_http import post, reject_call, waiting_run

pytest_plugins = ["tests.http_fixtures"]


async def follow_raw(
    http: httpx.AsyncClient, run_id: str, token: str, connected: asyncio.Event
) -> list[tuple[str, dict[str, Any]]]:
    """The stream's (event, data) frames to its end; `connected` is set at its first
    heartbeat comment (the stream is open and waiting)."""
    frames: list[tuple[str, dict[str, Any]]] = []
    event = ""
    url = f"/v1/runs/{run_id}/events"
    async with http.stream("GET", url, headers=bearer(token)) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line.startswith(":"):
                connected.set()
            elif line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                frames.append((event, json.loads(line.removeprefix("data:").strip())))
    return frames


async def test_a_queued_runs_events_wait_for_it_and_a_withdrawn_one_ends_its_stream(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    model_server: OfflineModelServer,
    repo: Repository,
) -> None:
    sid = f"s-{uuid.uuid4().hex[:12]}"
    active = await waiting_run(http, keys, repo, model_server, sid)
    key = uuid.uuid4().hex
    model_server.script(f"next {key}", [Reply(text="next answer")])
    first = (await post(http, keys.full, f"next {key}", sid, "enqueue")).json()
    second = (await post(http, keys.full, f"never {key}", sid, "enqueue")).json()
    assert first["status"] == second["status"] == RunStatus.QUEUED

    # The JSON page: empty, QUEUED, not ended; another tenant's key: 404 as for any run.
    url = f"/v1/runs/{first['run_id']}/events"
    page = await http.get(url, headers={**bearer(keys.read_only), "Accept": "application/json"})
    assert page.status_code == 200, page.text
    assert page.json() == {"events": [], "next_after": 0, "ended": False, "status": "QUEUED"}
    for accept in ("application/json", "text/event-stream"):
        hidden = await http.get(url, headers={**bearer(keys.other_tenant), "Accept": accept})
        assert_problem(hidden, 404)

    # Two streams wait, each open (heartbeats) while its message waits.
    waiting = [asyncio.Event(), asyncio.Event()]
    streams = [
        asyncio.create_task(follow_raw(http, m["run_id"], keys.read_only, w))
        for m, w in zip((first, second), waiting, strict=True)
    ]
    await asyncio.wait_for(asyncio.gather(*(w.wait() for w in waiting)), BOUND)
    assert not any(s.done() for s in streams)

    # The second is withdrawn: its stream ends with one final error event that says so.
    r = await http.delete(
        f"/v1/sessions/{sid}/queue/{second['message_id']}", headers=bearer(keys.full)
    )
    assert r.status_code == 200, r.text
    ((event, body),) = await asyncio.wait_for(streams[1], BOUND)
    assert event == EventType.ERROR and body["kind"] == "message-cancelled"
    assert body["message_id"] == second["message_id"] and body["retryable"] is False
    assert not streams[0].done()
    gone = f"/v1/runs/{second['run_id']}/events"
    for accept in ("application/json", "text/event-stream"):
        later = await http.get(gone, headers={**bearer(keys.full), "Accept": accept})
        assert assert_problem(later, 404, "cancelled")["type"].endswith("message-cancelled")

    # The active run ends; the first message's run starts and its stream delivers every event.
    await reject_call(http, keys, active)
    frames = await asyncio.wait_for(streams[0], BOUND)
    assert (await ended(repo, first["run_id"])).status == RunStatus.DONE
    events = [e for e, _ in frames]
    assert events[0] == EventType.RUN_STATUS and frames[-1][1]["status"] == RunStatus.DONE
    assert EventType.MESSAGE_COMPLETED in events and EventType.ERROR not in events
    stored = await repo.read_events(first["run_id"], 0, 1000)
    assert len(frames) == len(stored)
