"""Issue 14 item 2: /metrics scraped after runs shows our counters moving by exactly what the
runs did (checked against the database's own record of them), next to the Temporal SDK's own
metrics, on the worker's AGENTRUN_METRICS_PORT; each of `--processes N` on its own port; the
HTTP API's /metrics with its SSE followers gauge."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from agentrun.client import RunHandle, connect, start_run
from agentrun.protocol.events import EventType
from agentrun.protocol.statuses import RunStatus
from agentrun.settings import Settings
from agentrun.stack import free_port
from agentrun.store import Repository
from agentrun.telemetry.metrics import prometheus_runtime
from agentrun.telemetry.worker import ApprovalsGauge, MetricsPortError, process_port
from agentrun.testing.offline_model import Fault, OfflineModelServer, Reply, ToolCallSpec
from tests.conftest import next_event
from tests.http_support import BOUND, Keys, bearer, start
from tests.test_cli import spawn
from tests.test_cli_errors import json_line, stop
from tests.test_worker_processes import worker_env
from worker import build_worker, connect_client

pytest_plugins = ["tests.http_fixtures"]

Samples = list[tuple[str, dict[str, str], float]]


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(url)
    assert r.status_code == 200, r.text
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    ]


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when none)."""
    return sum(
        v for n, ls, v in samples if n == name and all(ls.get(k) == w for k, w in labels.items())
    )


async def until(check: Callable[[], Awaitable[Any]], timeout: float = BOUND) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)
    return result


async def _recorded(repo: Repository, run_ids: list[str]) -> dict[str, Any]:
    async with repo.engine.connect() as conn:
        calls = (
            await conn.execute(
                text(
                    "SELECT coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0) "
                    "FROM llm_calls WHERE run_id = ANY(:ids)"
                ),
                {"ids": run_ids},
            )
        ).one()
        deltas = (
            await conn.execute(
                text("SELECT count(*) FROM run_events WHERE run_id = ANY(:ids) AND type = :delta"),
                {"ids": run_ids, "delta": EventType.MESSAGE_DELTA.value},
            )
        ).scalar()
    return {"input": calls[0], "output": calls[1], "deltas": deltas}


async def test_worker_metrics_move_by_what_the_runs_did(
    settings: Settings, repo: Repository, model_server: OfflineModelServer
) -> None:
    port = free_port()
    runtime = prometheus_runtime("127.0.0.1", port)
    url = f"http://127.0.0.1:{port}/metrics"
    client = await connect_client(settings, runtime)
    tq = settings.task_queue
    before = await scrape(url)
    assert value(before, "agentrun_runs_finished_total", task_queue=tq) == 0

    tag = uuid.uuid4().hex
    calc, flaky, risky = f"calc {tag}", f"flaky {tag}", f"risky {tag}"
    model_server.script(
        calc,
        [
            Reply(
                text="Computing.", tool_calls=[ToolCallSpec("calculator", {"expression": "6*7"})]
            ),
            Reply(text="It is 42."),
        ],
    )
    model_server.script(flaky, [Fault(status=429, retry_after_s=0.1), Reply(text="Now fine.")])
    model_server.script(
        risky,
        [
            Reply(
                text="Running.", tool_calls=[ToolCallSpec("bash", {"command": "true"}, id="call_b")]
            ),
            Reply(text="Understood, not run."),
        ],
    )
    gauge = ApprovalsGauge(repo, runtime)
    worker = build_worker(client, settings, repo, graceful_shutdown=timedelta(seconds=1))
    run_ids = []
    async with worker:
        for prompt in (calc, flaky):
            handle = await start_run(client, tq, prompt, config={"tools": ["calculator"]})
            run_ids.append(handle.id)
            assert (await handle.result()).status == RunStatus.DONE
        waiting_before = await gauge.refresh()
        handle = await start_run(
            client,
            tq,
            risky,
            config={"tools": ["bash"], "approval_overrides": {"bash": "needs_approval"}},
        )
        run_ids.append(handle.id)
        await next_event(repo, handle.id, EventType.TOOL_APPROVAL_REQUESTED)
        assert await gauge.refresh() == waiting_before + 1
        assert value(await scrape(url), "agentrun_approvals_waiting") == waiting_before + 1
        await handle.decide("call_b", "reject", reason="not today")
        assert (await handle.result()).status == RunStatus.DONE
        assert await gauge.refresh() == waiting_before
        assert value(await scrape(url), "agentrun_approvals_waiting") == waiting_before

    after = await scrape(url)
    db = await _recorded(repo, run_ids)

    def got(name: str, **labels: str) -> float:
        return value(after, name, task_queue=tq, **labels)

    assert got("agentrun_runs_finished_total", status="DONE") == 3
    assert got("agentrun_runs_finished_total") == 3
    assert got("agentrun_model_calls_total", model="offline-scripted", outcome="ok") == 5
    assert got("agentrun_model_calls_total", outcome="error") == 1
    assert got("agentrun_model_errors_total", kind="429") == 1
    assert got("agentrun_model_errors_total") == 1
    assert got("agentrun_model_tokens_total", direction="input") == db["input"] > 0
    assert got("agentrun_model_tokens_total", direction="output") == db["output"] > 0
    assert got("agentrun_model_call_duration_seconds_count") == 6
    assert got("agentrun_model_time_to_first_token_seconds_count") == 5  # the 429 had none
    assert got("agentrun_tool_calls_total", tool="calculator", outcome="ok") == 1
    assert got("agentrun_tool_calls_total", tool="bash", outcome="rejected") == 1
    assert got("agentrun_tool_calls_total") == 2
    assert got("agentrun_stream_commits_total") == db["deltas"] > 0
    # Unknown prices record nothing (a priced model: test_the_cost_metric_adds_up_to_the_ledger).
    assert got("agentrun_model_cost_usd_count") == 0
    row = await repo.get_tool_call(run_ids[2], "call_b")
    assert row.decided_at is not None
    assert got("agentrun_approval_wait_seconds_count", decision="reject") == 1
    assert got("agentrun_approval_wait_seconds_sum") == pytest.approx(
        (row.decided_at - row.created_at).total_seconds(), abs=1e-6
    )
    # The Temporal SDK's own metrics are on the same endpoint.
    assert any(n.startswith("temporal_") and ls.get("task_queue") == tq for n, ls, _ in after)
    # Labels stay bounded: no run, session or call id anywhere.
    for _, labels, _ in after:
        for v in labels.values():
            assert not any(rid in v for rid in run_ids) and v != "call_b"


def test_each_worker_process_gets_its_own_port(settings: Settings) -> None:
    on = settings.model_copy(update={"metrics_port": 9500})
    assert process_port(on, None).metrics_port == 9500
    assert [process_port(on, i).metrics_port for i in (1, 2, 3)] == [9500, 9501, 9502]
    assert process_port(settings, 2).metrics_port is None
    with pytest.raises(MetricsPortError, match="AGENTRUN_METRICS_PORT"):
        process_port(settings.model_copy(update={"metrics_port": 65535}), 2)


async def test_worker_processes_serve_metrics_on_consecutive_ports(
    settings: Settings, model_server: OfflineModelServer, tmp_path: Path
) -> None:
    port = _two_free_ports()
    env = worker_env(settings, tmp_path, model_server)
    env["AGENTRUN_METRICS_PORT"] = str(port)
    proc = await spawn(env, "worker", "--processes", "2", "--json")
    try:
        polling = await json_line(proc)
        assert polling["processes"] == 2
        for p in (port, port + 1):
            samples = await until(lambda p=p: _scrape_or_none(f"http://127.0.0.1:{p}/metrics"))
            assert any(n.startswith("temporal_") for n, _, _ in samples)
    finally:
        done = await stop(proc, signal.SIGTERM)
    assert done.code == 0, done.err


def _two_free_ports() -> int:
    """A free port whose next one is free too (bounded tries)."""
    import socket

    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


async def _scrape_or_none(url: str) -> Samples | None:
    try:
        samples = await scrape(url)
    except httpx.HTTPError:
        return None
    return samples or None


async def test_a_taken_metrics_port_stops_the_worker_with_a_clear_message(
    settings: Settings, model_server: OfflineModelServer, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = worker_env(settings, tmp_path, model_server)
        env["AGENTRUN_METRICS_PORT"] = str(taken.getsockname()[1])
        proc = await spawn(env, "worker")
        _, err = await asyncio.wait_for(proc.communicate(), BOUND)
    assert proc.returncode == 1
    assert "AGENTRUN_METRICS_PORT: cannot serve metrics on 127.0.0.1:" in err.decode()


async def test_the_api_serves_metrics_with_its_sse_followers(
    api: str,
    http: httpx.AsyncClient,
    keys: Keys,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    async def followers() -> float:
        return value(await scrape(f"{api}/metrics"), "agentrun_sse_followers")

    r = await http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert await followers() == 0
    prompt = f"follow {uuid.uuid4().hex}"
    model_server.script(prompt, [Reply(text="Followed.")])
    client = await connect(settings)
    worker = build_worker(client, settings, repo, graceful_shutdown=timedelta(seconds=1))
    # The run waits for a worker: its stream stays open until then.
    run = await start(http, keys.full, prompt)
    async with aconnect_sse(
        http, "GET", f"/v1/runs/{run['run_id']}/events", headers=bearer(keys.full)
    ) as source:
        assert source.response.status_code == 200
        assert await until(lambda: _equals(followers, 1))
        async with worker:
            async for sse in source.aiter_sse():
                if sse.event == EventType.RUN_STATUS and '"DONE"' in sse.data:
                    break
            assert (await RunHandle(client, run["run_id"]).result()).status == RunStatus.DONE
    assert await until(lambda: _equals(followers, 0))


async def _equals(read: Callable[[], Awaitable[float]], expected: float) -> bool:
    return await read() == expected


async def test_dev_serves_the_worker_metrics_and_prints_where(
    settings: Settings, tmp_path: Path
) -> None:
    from tests.test_cli_errors import stack_env

    proc = await spawn(stack_env(settings, tmp_path), "dev", "--json", "--no-api")
    try:
        ready = await json_line(proc)
        assert ready["event"] == "ready"
        url = ready["metrics"]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        samples = await until(lambda: _scrape_or_none(url))
        assert any(n.startswith("temporal_") for n, _, _ in samples)
    finally:
        done = await stop(proc)
    assert done.code == 0, done.err


async def test_the_approvals_gauge_refreshes_in_the_background(repo: Repository) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    runtime = prometheus_runtime("127.0.0.1", port)
    expected = await ApprovalsGauge(repo, None).refresh()  # the database's own count

    async def shown() -> bool:
        samples = await scrape(url)
        return any(n == "agentrun_approvals_waiting" and v == expected for n, _, v in samples)

    assert not await shown()  # nothing until the worker's gauge runs
    async with ApprovalsGauge(repo, runtime, every_s=0.05):
        assert await until(shown)


async def test_the_cost_metric_adds_up_to_the_ledger(
    settings: Settings, repo: Repository, model_server: OfflineModelServer
) -> None:
    """A priced model's calls move agentrun_model_cost_usd by what the ledger recorded."""
    from tests.test_cost_ledger import PRICED_MODEL, reported, two_turns

    port = free_port()
    runtime = prometheus_runtime("127.0.0.1", port)
    url = f"http://127.0.0.1:{port}/metrics"
    client = await connect_client(settings, runtime)
    tq = settings.task_queue
    prompt = f"priced {uuid.uuid4().hex}"
    model_server.script(prompt, two_turns(prompt, reported(1200, 80, 400), reported(1500, 20)))
    worker = build_worker(client, settings, repo, graceful_shutdown=timedelta(seconds=1))
    async with worker:
        config = {"tools": ["calculator"], "model": PRICED_MODEL}
        handle = await start_run(client, tq, prompt, config=config)
        assert (await handle.result()).status == RunStatus.DONE
    after = await scrape(url)
    async with repo.session() as db:
        costs = (
            await db.execute(
                text("SELECT cost_usd FROM llm_calls WHERE run_id = :r ORDER BY turn"),
                {"r": handle.id},
            )
        ).scalars()
        recorded = list(costs)
    assert len(recorded) == 2 and all(c is not None and c > 0 for c in recorded)
    labels = {"task_queue": tq, "model": PRICED_MODEL}
    assert value(after, "agentrun_model_cost_usd_count", **labels) == 2
    assert value(after, "agentrun_model_cost_usd_sum", **labels) == pytest.approx(
        float(sum(recorded)), rel=1e-9
    )
