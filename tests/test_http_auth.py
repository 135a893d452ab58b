"""Keys, scopes and tenants over HTTP (a real uvicorn server, real httpx): missing, malformed,
unknown and revoked keys are 401; a key without the scope is 403 and changes nothing; another
tenant's run, session and tool call are 404 on every endpoint, the same answer as a run that
does not exist; `?access_token=` works for the event stream only and no log line carries it."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import httpx
import pytest
from temporalio.worker import Worker

from agentrun.protocol.events import EventType
from agentrun.protocol.statuses import RunStatus
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply
from tests.conftest import bash_call
from tests.http_support import Keys, assert_problem, bearer, sse_events, start

pytest_plugins = ["tests.http_fixtures"]


def _endpoints(run_id: str, session_id: str, call_id: str) -> list[tuple[str, str, object]]:
    """Every /v1 endpoint that names a run, a session or a call: (method, path, body)."""
    run = f"/v1/runs/{run_id}"
    return [
        ("GET", run, None),
        ("GET", f"{run}/events", None),
        ("POST", f"{run}/tool-calls/{call_id}/decision", {"decision": "reject", "reason": "x"}),
        ("POST", f"{run}/tool-calls/{call_id}/result", {"result": "x"}),
        ("POST", f"{run}/cancel", {"reason": "x"}),
        ("GET", f"/v1/sessions/{session_id}/messages", None),
    ]


async def _call(
    http: httpx.AsyncClient, method: str, path: str, body: object, headers: dict[str, str]
) -> httpx.Response:
    if body is None:
        return await http.request(method, path, headers=headers)
    return await http.request(method, path, json=body, headers=headers)


async def _waiting_run(
    http: httpx.AsyncClient, keys: Keys, model_server: OfflineModelServer, tag: str, ws: Path
) -> dict[str, str]:
    prompt = f"http auth {tag}"
    model_server.script(prompt, [bash_call("echo guarded", "call_g"), Reply(text="Guarded.")])
    started = await start(http, keys.full, prompt, config={"workspace": str(ws)})
    await sse_events(
        http, started["run_id"], keys.full, until_type=EventType.TOOL_APPROVAL_REQUESTED.value
    )
    return started


async def test_missing_malformed_unknown_and_revoked_keys_are_401(
    http: httpx.AsyncClient, keys: Keys
) -> None:
    forged = keys.full[:-4] + ("AAAA" if not keys.full.endswith("AAAA") else "BBBB")
    cases: list[dict[str, str]] = [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Bearer " + "a" * 5000},
        bearer(forged),
        bearer(keys.revoked),
    ]
    for headers in cases:
        for method, path in (("GET", "/v1/runs"), ("POST", "/v1/runs")):
            r = await http.request(method, path, json={"prompt": "hi"}, headers=headers)
            assert_problem(r, 401)
            assert r.headers["www-authenticate"].lower().startswith("bearer"), headers
    # The query token is for the event stream only.
    r = await http.get("/v1/runs", params={"access_token": keys.full})
    assert_problem(r, 401)
    listed = await http.get("/v1/runs", headers=bearer(keys.full))
    assert listed.status_code == 200 and listed.json()["runs"] == []


async def test_a_revoked_key_is_refused_at_once(
    http: httpx.AsyncClient, repo: Repository, keys: Keys
) -> None:
    _, token = await repo.create_api_key(keys.tenant, "short-lived", ["read"])
    assert (await http.get("/v1/runs", headers=bearer(token))).status_code == 200
    await repo.revoke_api_key("short-lived", tenant=keys.tenant)
    assert_problem(await http.get("/v1/runs", headers=bearer(token)), 401)


async def test_another_tenants_run_is_404_everywhere_like_a_missing_one(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    started = await _waiting_run(http, keys, model_server, run_id, tmp_path)
    rid, session = started["run_id"], started["session_id"]
    intruder = bearer(keys.other_tenant)
    missing, missing_session = f"run-{uuid.uuid4().hex[:12]}", f"s-{uuid.uuid4().hex[:12]}"
    for (method, path, body), (_, missing_path, _) in zip(
        _endpoints(rid, session, "call_g"),
        _endpoints(missing, missing_session, "call_g"),
        strict=True,
    ):
        theirs = assert_problem(await _call(http, method, path, body, intruder), 404)
        nobody = assert_problem(await _call(http, method, missing_path, body, intruder), 404)
        # Nothing but the id tells the two apart.
        assert theirs.keys() == nobody.keys() and theirs["type"] == nobody["type"]
        shown = theirs["detail"].replace(rid, "ID").replace(session, "ID")
        assert shown == nobody["detail"].replace(missing, "ID").replace(missing_session, "ID")
    events = await http.get(f"/v1/runs/{rid}/events", params={"access_token": keys.other_tenant})
    assert_problem(events, 404)
    listed = (await http.get("/v1/runs", headers=intruder)).json()
    assert listed["runs"] == []
    # A session id of another tenant cannot be used to start a run either.
    r = await http.post(
        "/v1/runs", json={"prompt": "join", "session_id": session}, headers=intruder
    )
    assert_problem(r, 404, session)
    # None of it changed the run: still waiting, the call undecided.
    call = await repo.get_tool_call(rid, "call_g")
    assert call.decision is None and (await repo.get_run(rid)).status == RunStatus.WAITING_APPROVAL
    r = await http.post(f"/v1/runs/{rid}/cancel", headers=bearer(keys.full))
    assert r.json()["status"] == RunStatus.CANCELED


async def test_a_key_without_the_scope_is_403_and_changes_nothing(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    started = await _waiting_run(http, keys, model_server, run_id, tmp_path)
    rid, session = started["run_id"], started["session_id"]
    reader = bearer(keys.read_only)
    for method, path, body in _endpoints(rid, session, "call_g"):
        # (The event stream of a run that waits does not end: its JSON page does.)
        r = await _call(http, method, path, body, {**reader, "Accept": "application/json"})
        if method == "GET":
            assert r.status_code == 200, (path, r.text)
        else:
            assert_problem(r, 403, "scope")
    before = (await http.get("/v1/runs", headers=reader)).json()["runs"]
    assert_problem(await http.post("/v1/runs", json={"prompt": "no"}, headers=reader), 403, "write")
    assert (await http.get("/v1/runs", headers=reader)).json()["runs"] == before
    # A writer starts and cancels but does not approve its own calls.
    decision = {"decision": "approve"}
    r = await http.post(f"/v1/runs/{rid}/tool-calls/call_g/decision", json=decision,
                        headers=bearer(keys.writer))  # fmt: skip
    assert_problem(r, 403, "approve")
    call = await repo.get_tool_call(rid, "call_g")
    assert call.decision is None and (await repo.get_run(rid)).status == RunStatus.WAITING_APPROVAL
    r = await http.post(f"/v1/runs/{rid}/cancel", headers=bearer(keys.writer))
    assert r.status_code == 200 and r.json()["status"] == RunStatus.CANCELED


async def test_the_event_stream_takes_a_query_token_and_logs_no_query_string(
    api: str,
    keys: Keys,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    prompt = f"http query token {run_id}"
    model_server.script(prompt, [Reply(text="Tokened.")])
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(base_url=api, timeout=60) as http:
        rid = (await start(http, keys.full, prompt, config={"tools": []}))["run_id"]
        async with http.stream(
            "GET", f"/v1/runs/{rid}/events", params={"access_token": keys.read_only}
        ) as r:
            assert r.status_code == 200
            body = "".join([line + "\n" async for line in r.aiter_lines()])
        assert "event: run.status" in body and '"status":"DONE"' in body
        r = await http.get(f"/v1/runs/{rid}", params={"access_token": keys.read_only})
        assert_problem(r, 401)
    server_loggers = ("agentrun", "uvicorn")  # (httpx, the client here, logs its own URLs)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith(server_loggers)]
    assert any(f"/v1/runs/{rid}/events 200" in line for line in lines), lines
    for secret in (keys.read_only, keys.full, "access_token"):
        assert not any(secret in line for line in lines)
    assert json.dumps(lines)  # the records are plain text
