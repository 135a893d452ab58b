"""Cost and budgets over the HTTP API: a run's view carries its exact cost as a string, a
budget in the config is taken and kept, and a bad budget is refused before anything starts."""

from __future__ import annotations

from decimal import Decimal

import httpx
from temporalio.worker import Worker

from agentrun.protocol.events import EventType
from agentrun.protocol.statuses import RunStatus
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply
from tests.http_support import Keys, assert_problem, bearer, data, sse_events, start
from tests.test_cost_ledger import PRICED_MODEL, reported, their_price

pytest_plugins = ["tests.http_fixtures"]


async def test_a_runs_view_carries_its_exact_cost_and_a_budget_stops_it(
    http: httpx.AsyncClient,
    keys: Keys,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    usage = reported(3000, 200, cached=2048, reasoning=50)
    prompt = f"http cost {run_id}"
    model_server.script(prompt, [Reply(text="Priced.", usage=usage)])
    config = {"model": PRICED_MODEL, "max_cost_usd": "1.00", "tools": []}
    started = await start(http, keys.full, prompt, config=config)
    events = await sse_events(http, started["run_id"], keys.full)
    assert data(events[-1])["status"] == RunStatus.DONE
    view = (await http.get(f"/v1/runs/{started['run_id']}", headers=bearer(keys.full))).json()
    cost = view["usage"]["cost_usd"]
    assert isinstance(cost, str) and Decimal(cost) == their_price(PRICED_MODEL, usage)
    assert (view["usage"]["cached_tokens"], view["usage"]["reasoning_tokens"]) == (2048, 50)
    assert view["usage"]["unpriced_calls"] == 0

    # A session already over a budget: the run over HTTP fails before any model call.
    session = started["session_id"]
    await repo.set_session_budget(session, Decimal(cost), None, tenant=keys.tenant)
    again = f"http again {run_id}"
    model_server.script(again, [Reply(text="Never.", usage=usage)])
    blocked = await start(http, keys.full, again, session_id=session, config=config)
    tail = await sse_events(http, blocked["run_id"], keys.full)
    assert EventType.BUDGET_EXCEEDED in [e.event for e in tail]
    assert data(tail[-1])["status"] == RunStatus.FAILED
    assert model_server.requests_for(again) == []


async def test_a_bad_budget_is_refused_before_anything_starts(
    http: httpx.AsyncClient, keys: Keys, repo: Repository, run_id: str
) -> None:
    for config in ({"max_cost_usd": "-1"}, {"max_cost_usd": "ten"}, {"max_total_tokens": 0}):
        r = await http.post(
            "/v1/runs",
            json={"prompt": "hi", "run_id": run_id, "config": config},
            headers=bearer(keys.full),
        )
        assert_problem(r, 422, next(iter(config)))
    assert await repo.find_run(run_id) is None
