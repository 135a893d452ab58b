"""Bad and repeated input over HTTP (a real uvicorn server, real httpx): an idempotent start, a
busy session, bodies over the limit, unknown fields, malformed JSON, refused decisions; every
error a problem document, and nothing written or started for a refused request. Also the
health endpoints and the OpenAPI document."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from temporalio.worker import Worker

from agentrun.protocol.events import EventType
from agentrun.protocol.statuses import RunStatus
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply
from tests.conftest import bash_call
from tests.http_support import Keys, assert_problem, bearer, sse_events, start

pytest_plugins = ["tests.http_fixtures"]


async def _run_ids(http: httpx.AsyncClient, token: str) -> list[str]:
    body = (await http.get("/v1/runs", params={"limit": 200}, headers=bearer(token))).json()
    return [row["run_id"] for row in body["runs"]]


async def test_an_idempotent_retry_before_any_worker_opens_the_run_names_its_session(
    http: httpx.AsyncClient, keys: Keys, run_id: str
) -> None:
    # No worker: the run is started but never opened, so the retry cannot read it back.
    headers = {**bearer(keys.full), "Idempotency-Key": f"early-{run_id}"}
    body = {"prompt": f"early retry {run_id}", "config": {"tools": []}}
    first = await http.post("/v1/runs", json=body, headers=headers)
    again = await http.post("/v1/runs", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200), (first.text, again.text)
    assert again.json()["run_id"] == first.json()["run_id"]
    assert again.json()["session_id"] == first.json()["session_id"]


async def test_an_idempotent_start(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"http idempotent {run_id}"
    model_server.script(prompt, [Reply(text="Once only.")])
    headers = {**bearer(keys.full), "Idempotency-Key": f"k-{run_id}"}
    body = {"prompt": prompt, "config": {"tools": [], "max_turns": 3}}
    first = await http.post("/v1/runs", json=body, headers=headers)
    assert first.status_code == 201, first.text
    rid = first.json()["run_id"]
    # The same body, in another key order and spacing: the same run, 200.
    same = await http.post(
        "/v1/runs",
        content=f'{{ "config": {{"max_turns": 3, "tools": []}}, "prompt": "{prompt}" }}',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert same.status_code == 200 and same.json()["run_id"] == rid, same.text
    await sse_events(http, rid, keys.full)  # to its end
    again = await http.post("/v1/runs", json=body, headers=headers)
    assert again.status_code == 200 and again.json()["run_id"] == rid
    assert again.json()["status"] == RunStatus.DONE
    # Another body under the same key: refused, nothing started.
    other = await http.post("/v1/runs", json={**body, "prompt": prompt + "!"}, headers=headers)
    assert_problem(other, 422, "different body")
    assert await _run_ids(http, keys.full) == [rid]
    # The key is the tenant's own: another tenant's same key is another run.
    theirs = await http.post(
        "/v1/runs", json={"prompt": "theirs", "config": {"tools": []}},
        headers={**bearer(keys.other_tenant), "Idempotency-Key": f"k-{run_id}"},
    )  # fmt: skip
    assert theirs.status_code == 201 and theirs.json()["run_id"] != rid
    bad = await http.post("/v1/runs", json=body, headers={**headers, "Idempotency-Key": "a b"})
    assert_problem(bad, 422, "Idempotency-Key")


async def test_a_busy_session_is_409_with_the_active_run(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"http busy {run_id}"
    model_server.script(prompt, [bash_call("echo busy", "call_b"), Reply(text="Busy.")])
    session = f"s-{uuid.uuid4().hex[:12]}"
    started = await start(
        http, keys.full, prompt, session_id=session, config={"workspace": str(tmp_path)}
    )
    rid = started["run_id"]
    await sse_events(http, rid, keys.full, until_type=EventType.TOOL_APPROVAL_REQUESTED.value)
    headers = {**bearer(keys.full), "Idempotency-Key": f"busy-{run_id}"}
    second = await http.post(
        "/v1/runs", json={"prompt": "me too", "session_id": session}, headers=headers
    )
    problem = assert_problem(second, 409, "active run")
    assert problem["active_run_id"] == rid and problem["session_id"] == session
    assert await _run_ids(http, keys.full) == [rid]
    await http.post(f"/v1/runs/{rid}/cancel", headers=bearer(keys.full))
    # The refused start left its key free: the same request now starts the run (an explicit
    # null config is the same body as none).
    model_server.script("me too", [Reply(text="Me too.")])
    now = await http.post(
        "/v1/runs",
        json={"prompt": "me too", "session_id": session, "config": None},
        headers=headers,
    )
    assert now.status_code == 201 and now.json()["run_id"] != rid, now.text
    await sse_events(http, now.json()["run_id"], keys.full)


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_bodies_over_the_limit_unknown_fields_and_malformed_json(
    http: httpx.AsyncClient, keys: Keys, repo: Repository
) -> None:
    headers = {**bearer(keys.full), "Content-Type": "application/json"}
    big = b'{"prompt": "' + b"x" * (2 << 20) + b'"}'
    assert_problem(await http.post("/v1/runs", content=big, headers=headers), 413, "larger")
    # Streamed without a Content-Length (chunked): counted as it comes. (Just over the limit:
    # the server answers and closes at once, and a client still sending megabytes would see the
    # connection reset before it reads the answer.)
    over = b'{"prompt": "' + b"x" * (1 << 20) + b'"}'
    r = await http.post("/v1/runs", content=_chunks(over, 16 << 10), headers=headers)
    assert_problem(r, 413)
    # Even before the key is looked at.
    assert_problem(await http.post("/v1/runs", content=big), 413)

    r = await http.post("/v1/runs", json={"prompt": "hi", "promt": "typo"}, headers=headers)
    problem = assert_problem(r, 422, "promt")
    assert problem["errors"][0]["location"] == "promt"
    r = await http.post(
        "/v1/runs", json={"prompt": "hi", "config": {"max_turn": 3}}, headers=headers
    )
    assert_problem(r, 422, "config.max_turn")
    r = await http.post(
        "/v1/runs",
        json={"prompt": "hi", "config": {"client_tools": [{"name": "t", "paramters": {}}]}},
        headers=headers,
    )
    assert_problem(r, 422, "paramters")
    for bad in (b'{"prompt": "hi"', b"prompt=hi", b"[1, 2]", b""):
        r = await http.post("/v1/runs", content=bad, headers=headers)
        assert r.status_code in (400, 422), (bad, r.text)
        assert_problem(r, r.status_code)
    assert_problem(
        await http.post("/v1/runs", json={"prompt": "  "}, headers=headers), 422, "empty"
    )
    assert_problem(
        await http.post("/v1/runs", json={"prompt": "a\x00b"}, headers=headers), 422, "prompt"
    )
    assert_problem(
        await http.post("/v1/runs", json={"prompt": "x", "session_id": "../x"}, headers=headers),
        422,
        "session_id",
    )
    assert_problem(await http.get("/v1/runs?status=SLEEPING", headers=headers), 422, "status")
    assert_problem(await http.get("/v1/runs?cursor=garbage", headers=headers), 400, "cursor")
    assert_problem(await http.get("/v1/nowhere", headers=headers), 404, "endpoint")
    for odd in ("x" * 500, "..", "a b", "%00"):
        assert_problem(await http.get(f"/v1/runs/{odd}", headers=headers), 404)
        assert_problem(await http.get(f"/v1/sessions/{odd}/messages", headers=headers), 404)
    assert_problem(await http.delete("/v1/runs", headers=headers), 405)
    assert await _run_ids(http, keys.full) == []


async def test_refused_decisions(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"http refusals {run_id}"
    model_server.script(prompt, [bash_call("echo r", "call_r"), Reply(text="Refused.")])
    rid = (await start(http, keys.full, prompt, config={"workspace": str(tmp_path)}))["run_id"]
    await sse_events(http, rid, keys.full, until_type=EventType.TOOL_APPROVAL_REQUESTED.value)
    url = f"/v1/runs/{rid}/tool-calls"
    auth = bearer(keys.full)

    async def decide(call: str, body: dict[str, object]) -> httpx.Response:
        return await http.post(f"{url}/{call}/decision", json=body, headers=auth)

    assert_problem(await decide("call_nope", {"decision": "approve"}), 404)
    mismatch = await decide("call_r", {"decision": "approve", "arguments_sha256": "0" * 64})
    assert assert_problem(mismatch, 422)["error_type"] == "HashMismatch"
    edits = {"decision": "approve_with_edits", "arguments": {"cmd": "ls"}}
    assert assert_problem(await decide("call_r", edits), 422)["error_type"] == "SchemaMismatch"
    assert_problem(await decide("call_r", {"decision": "maybe"}), 422, "decision")
    forged = {"decision": "approve", "decided_by": "the boss"}
    assert_problem(await decide("call_r", forged), 422, "decided_by")
    assert (await repo.get_tool_call(rid, "call_r")).decision is None
    ok = await decide("call_r", {"decision": "reject", "reason": "not now"})
    assert ok.status_code == 200 and ok.json()["decided_by"] == keys.full_name
    assert_problem(await decide("call_r", {"decision": "approve"}), 409)
    events = await sse_events(http, rid, keys.full)
    assert events[-1].event == EventType.RUN_STATUS
    assert_problem(await decide("call_r", {"decision": "approve"}), 409)


async def test_health_readiness_and_the_openapi_document(
    http: httpx.AsyncClient, keys: Keys
) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"temporal": "ok", "postgresql": "ok"}
    spec = (await http.get("/openapi.json")).json()
    paths = spec["paths"]
    for path in (
        "/v1/runs",
        "/v1/runs/{run_id}",
        "/v1/runs/{run_id}/events",
        "/v1/runs/{run_id}/tool-calls/{tool_call_id}/decision",
        "/v1/runs/{run_id}/tool-calls/{tool_call_id}/result",
        "/v1/runs/{run_id}/cancel",
        "/v1/sessions/{session_id}/messages",
    ):
        assert path in paths, path
    schemas = spec["components"]["schemas"]
    assert "decided_by" not in schemas["DecisionRequest"]["properties"]
    assert schemas["StartRunRequest"]["additionalProperties"] is False
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert paths["/v1/runs"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in paths["/readyz"]["get"]
    page = await http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert_problem(await http.get("/v1/sessions?cursor=x", headers=bearer(keys.full)), 400)
    docs = await http.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
