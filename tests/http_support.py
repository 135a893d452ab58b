"""Shared by tests/test_http_*.py: helpers around httpx and httpx-sse, and the keys the
fixtures of tests/http_fixtures.py make (a module loads those with
`pytest_plugins = ["tests.http_fixtures"]`)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

BOUND = 60.0
# Short, so a test sees a heartbeat without waiting 15 s.
HEARTBEAT_S = 0.5


@dataclass
class Keys:
    tenant: str
    full: str  # read, write, approve
    full_name: str
    read_only: str
    writer: str  # read, write: starts runs, cannot approve
    other_tenant: str  # every scope, another tenant
    revoked: str


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def start(http: httpx.AsyncClient, token: str, prompt: str, **body: Any) -> dict[str, Any]:
    r = await http.post("/v1/runs", json={"prompt": prompt, **body}, headers=bearer(token))
    assert r.status_code == 201, r.text
    return dict(r.json())


async def sse_events(
    http: httpx.AsyncClient,
    run_id: str,
    token: str,
    *,
    last_event_id: str | None = None,
    stop_after: int | None = None,
    until_type: str | None = None,
    params: dict[str, str] | None = None,
) -> list[ServerSentEvent]:
    """The run's SSE events (bounded): all of them until the stream ends, or the first
    `stop_after`, or up to and including the first of `until_type`."""
    headers = bearer(token)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id

    async def read() -> list[ServerSentEvent]:
        got: list[ServerSentEvent] = []
        url = f"/v1/runs/{run_id}/events"
        async with aconnect_sse(http, "GET", url, headers=headers, params=params) as source:
            assert source.response.status_code == 200, await source.response.aread()
            async for sse in source.aiter_sse():
                if not sse.event or sse.event == "message":
                    continue  # a comment-only frame
                got.append(sse)
                if stop_after is not None and len(got) >= stop_after:
                    break
                if until_type is not None and sse.event == until_type:
                    break
        return got

    return await asyncio.wait_for(read(), BOUND)


def data(sse: ServerSentEvent) -> dict[str, Any]:
    return dict(json.loads(sse.data))


def assert_problem(r: httpx.Response, status: int, needle: str = "") -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = dict(r.json())
    assert body["status"] == status and body["title"] and body["detail"], body
    assert needle.lower() in body["detail"].lower(), body
    return body
