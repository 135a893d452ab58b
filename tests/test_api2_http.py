"""HTTP gaps of issues 14-16 (README "HTTP API"): a session's budget read and set over HTTP
with the CLI's semantics; GET /v1/runs/{id} links a parent to its sub-runs and the child
approvals it waits on; the transcript says which message is a compaction summary."""

from __future__ import annotations

import uuid
from decimal import Decimal

import httpx
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.contracts import AgentConfig
from agentrun.contracts.subagents import child_run_id
from agentrun.db.models import Message
from agentrun.protocol.events import EventType
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from tests.conftest import next_event
from tests.http_support import Keys, assert_problem, bearer, data, sse_events, start
from tests.test_subagents import _delegate

pytest_plugins = ["tests.http_fixtures"]


async def test_a_sessions_budget_is_read_and_set_over_http(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    prompt = f"budget over http {uuid.uuid4()}"
    model_server.script(prompt, [Reply(text="Counted.")])
    started = await start(http, keys.full, prompt, config={"tools": []})
    await sse_events(http, started["run_id"], keys.full)
    url = f"/v1/sessions/{started['session_id']}/budget"

    got = (await http.get(url, headers=bearer(keys.read_only))).json()
    assert (got["max_cost_usd"], got["max_total_tokens"]) == (None, None)
    used = await repo.session_usage(started["session_id"])
    assert got["used_total_tokens"] == used.total_tokens > 0
    assert got["used"]["llm_calls"] == 1

    put = await http.put(url, json={"max_cost_usd": "2.50"}, headers=bearer(keys.writer))
    assert put.status_code == 200, put.text
    assert (put.json()["max_cost_usd"], put.json()["max_total_tokens"]) == ("2.50", None)
    # A limit left out keeps its value; null clears one.
    put = await http.put(url, json={"max_total_tokens": 5000}, headers=bearer(keys.writer))
    assert (put.json()["max_cost_usd"], put.json()["max_total_tokens"]) == ("2.50", 5000)
    session = await repo.get_session(started["session_id"])
    assert (session.max_cost_usd, session.max_total_tokens) == (Decimal("2.50"), 5000)
    put = await http.put(url, json={"max_cost_usd": None}, headers=bearer(keys.writer))
    assert (put.json()["max_cost_usd"], put.json()["max_total_tokens"]) == (None, 5000)

    # Bad values: 422, nothing changed.
    for body in (
        {"max_cost_usd": "-1"},
        {"max_cost_usd": "ten"},
        {"max_cost_usd": 2.5},
        {"max_cost_usd": "NaN"},
        {"max_cost_usd": "1e-999999"},
        {"max_cost_usd": "1e999999"},
        {"max_total_tokens": 0},
        {"max_total_tokens": "many"},
        {"max_total_tokens": True},
        {"max_cost_usd": "1", "extra": 1},
        {},
    ):
        assert_problem(await http.put(url, json=body, headers=bearer(keys.writer)), 422)
    session = await repo.get_session(started["session_id"])
    assert (session.max_cost_usd, session.max_total_tokens) == (None, 5000)

    # Scopes and tenancy.
    assert_problem(
        await http.put(url, json={"max_total_tokens": 1}, headers=bearer(keys.read_only)), 403
    )
    for call in (
        http.get(url, headers=bearer(keys.other_tenant)),
        http.put(url, json={"max_total_tokens": 1}, headers=bearer(keys.other_tenant)),
    ):
        assert_problem(await call, 404)
    assert (await repo.get_session(started["session_id"])).max_total_tokens == 5000
    assert_problem(await http.get("/v1/sessions/nope-x/budget", headers=bearer(keys.full)), 404)

    # A budget set before a session's first run makes the session, of this tenant.
    fresh = f"session-budget-{uuid.uuid4().hex[:8]}"
    made = await http.put(
        f"/v1/sessions/{fresh}/budget", json={"max_total_tokens": 1}, headers=bearer(keys.full)
    )
    assert made.status_code == 200 and made.json()["used"]["llm_calls"] == 0
    assert (await repo.get_session(fresh)).tenant == keys.tenant
    # A budget set over HTTP is the one the session's next run is held to.
    put = await http.put(
        url, json={"max_total_tokens": used.total_tokens}, headers=bearer(keys.writer)
    )
    assert put.status_code == 200, put.text
    blocked = f"blocked {uuid.uuid4()}"
    model_server.script(blocked, [Reply(text="Never.")])
    sid = started["session_id"]
    run = await start(http, keys.full, blocked, session_id=sid, config={"tools": []})
    tail = await sse_events(http, run["run_id"], keys.full)
    assert EventType.BUDGET_EXCEEDED in [e.event for e in tail]
    assert model_server.requests_for(blocked) == []


async def test_a_parent_run_shows_its_children_and_the_approvals_it_waits_on(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    temporal_env: WorkflowEnvironment,
) -> None:
    prompt, task = f"links over http {uuid.uuid4()}", f"ask first ({uuid.uuid4()})"
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
    await next_event(repo, run_id, EventType.SUBRUN_WAITING)
    # Another tenant's run that names this parent never shows.
    intruder = f"run-{uuid.uuid4().hex[:12]}"
    await repo.open_run(
        run_id=intruder,
        session_id=f"session-{uuid.uuid4().hex[:12]}",
        model="m",
        config=AgentConfig(),
        prompt="x",
        tenant=f"o-{uuid.uuid4().hex[:8]}",
        parent_run_id=run_id,
    )

    view = (await http.get(f"/v1/runs/{run_id}", headers=bearer(keys.read_only))).json()
    assert view["parent_run_id"] is None
    assert [(c["run_id"], c["agent"]) for c in view["children"]] == [(child, "researcher")]
    assert view["children"][0]["status"] in ("RUNNING", "WAITING_APPROVAL")
    (waits,) = view["waiting_on"]
    assert (waits["run_id"], waits["agent"]) == (child, "researcher")
    (call,) = waits["calls"]
    assert (call["tool_call_id"], call["name"], call["kind"]) == ("c2", "calculator", "approval")
    child_view = (await http.get(f"/v1/runs/{child}", headers=bearer(keys.full))).json()
    assert (child_view["parent_run_id"], child_view["children"]) == (run_id, [])
    listed = (await http.get("/v1/runs", headers=bearer(keys.full))).json()["runs"]
    assert {r["run_id"]: r["parent_run_id"] for r in listed} == {run_id: None, child: run_id}

    # Decided on the child from what the parent showed; the parent ends, nothing waits.
    decided = await http.post(
        f"/v1/runs/{child}/tool-calls/c2/decision",
        json={"decision": "approve", "arguments_sha256": call["arguments_sha256"]},
        headers=bearer(keys.full),
    )
    assert decided.status_code == 200, decided.text
    assert data((await sse_events(http, run_id, keys.full))[-1])["status"] == "DONE"
    view = (await http.get(f"/v1/runs/{run_id}", headers=bearer(keys.full))).json()
    assert [(c["run_id"], c["status"]) for c in view["children"]] == [(child, "DONE")]
    assert view["waiting_on"] == []


async def test_the_transcript_says_which_message_is_a_summary(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    prompt = f"summary kind {uuid.uuid4()}"
    model_server.script(prompt, [Reply(text="Hello.")])
    started = await start(http, keys.full, prompt, config={"tools": []})
    await sse_events(http, started["run_id"], keys.full)
    session_id = started["session_id"]
    url = f"/v1/sessions/{session_id}/messages"
    before = (await http.get(url, headers=bearer(keys.full))).json()["messages"]
    assert [m["kind"] for m in before] == ["message", "message"]
    assert all(m["covers_to_id"] is None for m in before)
    # A summary as activities/compaction.py records it (kind, covers_to_id).
    async with repo.transaction() as db:
        db.add(
            Message(
                idempotency_key=f"test-summary-{uuid.uuid4()}",
                session_id=session_id,
                run_id=started["run_id"],
                turn=2,
                role="system",
                content="Summary of the conversation so far: hello.",
                kind="summary",
                covers_to_id=before[-1]["id"],
            )
        )
    after = (await http.get(url, headers=bearer(keys.full))).json()["messages"]
    assert [m["kind"] for m in after] == ["message", "message", "summary"]
    assert after[-1]["covers_to_id"] == before[-1]["id"]
