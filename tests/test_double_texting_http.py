"""Double-texting over the HTTP API (a real uvicorn server, a worker in this process): POST
/v1/runs with each `if_busy`, two requests racing on an idle session, an Idempotency-Key retry
of a queued message, the session's queue (list, cancel) and its default policy, tenants."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from temporalio.worker import Worker

from agentrun.protocol.events import EventType
from agentrun.protocol.statuses import RunStatus
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply
from tests.conftest import bash_call, next_event
from tests.double_texting_support import (
    assert_one_at_a_time,
    ended,
    messages_of,
    queue_rows,
    session_runs,
    status_is,
)
from tests.http_support import Keys, assert_problem, bearer, start

pytest_plugins = ["tests.http_fixtures"]


@pytest.fixture
def session_id() -> str:
    return f"s-{uuid.uuid4().hex[:12]}"


async def post(
    http: httpx.AsyncClient, token: str, prompt: str, session_id: str, policy: str, **h: str
) -> httpx.Response:
    body = {"prompt": prompt, "session_id": session_id, "if_busy": policy}
    return await http.post("/v1/runs", json=body, headers={**bearer(token), **h})


async def waiting_run(
    http: httpx.AsyncClient, keys: Keys, repo: Repository, model: OfflineModelServer, sid: str
) -> str:
    key = uuid.uuid4().hex
    model.script(f"first {key}", [bash_call("echo hi", "call_w"), Reply(text="first done")])
    run = await start(http, keys.full, f"first {key}", session_id=sid, config={"tools": ["bash"]})
    await status_is(repo, run["run_id"], RunStatus.WAITING_APPROVAL)
    return str(run["run_id"])


async def reject_call(http: httpx.AsyncClient, keys: Keys, run_id: str) -> None:
    r = await http.post(
        f"/v1/runs/{run_id}/tool-calls/call_w/decision",
        json={"decision": "reject", "reason": "no"},
        headers=bearer(keys.full),
    )
    assert r.status_code == 200, r.text


async def test_reject_and_enqueue_over_http(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    model_server: OfflineModelServer,
    repo: Repository,
    session_id: str,
) -> None:
    active = await waiting_run(http, keys, repo, model_server, session_id)
    refused = await post(http, keys.full, "not now", session_id, "reject")
    problem = assert_problem(refused, 409, "active run")
    assert problem["active_run_id"] == active and problem["type"].endswith("session-busy")
    model_server.script("after it", [Reply(text="after answer")])
    r = await post(http, keys.full, "after it", session_id, "enqueue", **{"Idempotency-Key": "q1"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["if_busy"], body["ahead"], body["active_run_id"]) == ("enqueue", 1, active)
    assert body["status"] == RunStatus.QUEUED and body["message_id"].startswith("msg-")
    retry = await post(
        http, keys.full, "after it", session_id, "enqueue", **{"Idempotency-Key": "q1"}
    )
    assert retry.status_code in (200, 201) and retry.json()["run_id"] == body["run_id"]
    view = await http.get(f"/v1/runs/{body['run_id']}", headers=bearer(keys.full))
    assert view.status_code == 200 and view.json()["status"] == RunStatus.QUEUED, view.text
    assert view.json()["session_id"] == session_id
    hidden = await http.get(f"/v1/runs/{body['run_id']}", headers=bearer(keys.other_tenant))
    assert_problem(hidden, 404)
    listed = (await http.get(f"/v1/sessions/{session_id}/queue", headers=bearer(keys.full))).json()
    assert [m["message_id"] for m in listed["messages"]] == [body["message_id"]]
    assert listed["messages"][0]["state"] == "queued"
    await reject_call(http, keys, active)
    assert (await ended(repo, body["run_id"])).status == RunStatus.DONE
    runs = await session_runs(repo, session_id)
    assert [r.id for r in runs] == [active, body["run_id"]]
    assert_one_at_a_time(runs)


@pytest.mark.parametrize("policy", ["interrupt", "rollback"])
async def test_interrupt_and_rollback_over_http(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    model_server: OfflineModelServer,
    repo: Repository,
    session_id: str,
    policy: str,
) -> None:
    key = uuid.uuid4().hex
    model_server.script(f"long {key}", [Reply(text="partial " * 600, chunk_chars=8, delay_s=0.03)])
    active = (await start(http, keys.full, f"long {key}", session_id=session_id))["run_id"]
    await next_event(repo, active, EventType.MESSAGE_DELTA)
    model_server.script(f"new {key}", [Reply(text="new answer")])
    r = await post(http, keys.full, f"new {key}", session_id, policy)
    assert r.status_code == 201 and r.json()["active_run_id"] == active, r.text
    assert (await ended(repo, r.json()["run_id"])).status == RunStatus.DONE
    assert (await ended(repo, active)).status == RunStatus.CANCELED
    page = await http.get(f"/v1/sessions/{session_id}/messages", headers=bearer(keys.full))
    states = [(m["run_id"], m["role"], m["state"]) for m in page.json()["messages"]]
    if policy == "interrupt":
        assert (active, "assistant", "interrupted") in states
        assert (active, "user", None) in states
    else:
        assert {s for run, _, s in states if run == active} == {"rolled_back"}
    assert {s for run, _, s in states if run != active} == {None}
    assert len(await messages_of(repo, active)) == len([s for s in states if s[0] == active])


async def test_two_requests_racing_on_an_idle_session(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    model_server: OfflineModelServer,
    repo: Repository,
) -> None:
    key = uuid.uuid4().hex
    for policy in ("enqueue", "reject"):
        sid = f"s-{uuid.uuid4().hex[:12]}"
        for n in (1, 2):
            model_server.script(f"race {n} {policy} {key}", [Reply(text=f"answer {n}")])
        answers = await asyncio.gather(
            *(post(http, keys.full, f"race {n} {policy} {key}", sid, policy) for n in (1, 2))
        )
        codes = sorted(a.status_code for a in answers)
        accepted = [a.json() for a in answers if a.status_code == 201]
        if policy == "enqueue":
            assert codes == [201, 201], [a.text for a in answers]
            assert sorted(a["ahead"] for a in accepted) == [0, 1]
        else:
            assert codes == [201, 409], [a.text for a in answers]
            refused = next(a for a in answers if a.status_code == 409).json()
            assert refused["active_run_id"] == accepted[0]["run_id"]
        for a in accepted:
            assert (await ended(repo, a["run_id"])).status == RunStatus.DONE
        runs = await session_runs(repo, sid)
        assert len(runs) == len(accepted)
        assert_one_at_a_time(runs)


async def test_the_sessions_queue_and_default_over_http(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    model_server: OfflineModelServer,
    repo: Repository,
    session_id: str,
) -> None:
    url = f"/v1/sessions/{session_id}"
    r = await http.put(f"{url}/if-busy", json={"if_busy": "enqueue"}, headers=bearer(keys.full))
    assert r.status_code == 200 and r.json()["if_busy"] == "enqueue", r.text
    assert_problem(
        await http.put(f"{url}/if-busy", json={"if_busy": "x"}, headers=bearer(keys.full)), 422
    )
    assert_problem(
        await http.put(f"{url}/if-busy", json={"if_busy": None}, headers=bearer(keys.read_only)),
        403,
    )
    other = await http.put(
        f"{url}/if-busy", json={"if_busy": "reject"}, headers=bearer(keys.other_tenant)
    )
    assert_problem(other, 404)
    active = await waiting_run(http, keys, repo, model_server, session_id)
    # No if_busy in the body: the session's default (enqueue) applies.
    queued = await start(http, keys.full, "queued by default", session_id=session_id)
    assert queued["if_busy"] == "enqueue" and queued["ahead"] == 1
    assert_problem(await http.get(f"{url}/queue", headers=bearer(keys.other_tenant)), 404)
    assert_problem(
        await http.delete(f"{url}/queue/{queued['message_id']}", headers=bearer(keys.other_tenant)),
        404,
    )
    gone = await http.delete(f"{url}/queue/{queued['message_id']}", headers=bearer(keys.full))
    assert gone.status_code == 200 and gone.json()["state"] == "cancelled", gone.text
    assert gone.json()["reason"] == f"cancelled by {keys.full_name}"
    listed = (await http.get(f"{url}/queue", headers=bearer(keys.full))).json()
    assert listed["messages"] == [] and listed["if_busy"] == "enqueue"
    everything = (await http.get(f"{url}/queue?all=true", headers=bearer(keys.full))).json()
    started = [m for m in everything["messages"] if m["state"] == "started"]
    assert [m["run_id"] for m in started] == [active]
    assert_problem(
        await http.delete(f"{url}/queue/{started[0]['message_id']}", headers=bearer(keys.full)),
        409,
        "cancel its run instead",
    )
    assert_problem(await http.delete(f"{url}/queue/msg-none", headers=bearer(keys.full)), 404)
    for odd in ("x" * 41, "%00", "a b"):  # not a message id: a 404, never a database error
        assert_problem(await http.delete(f"{url}/queue/{odd}", headers=bearer(keys.full)), 404)
    await reject_call(http, keys, active)
    assert (await ended(repo, active)).status == RunStatus.DONE
    assert [r.state for r in await queue_rows(repo, session_id)] == ["started", "cancelled"]
    assert await repo.find_run(queued["run_id"]) is None
