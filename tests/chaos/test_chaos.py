"""Chaos: 20 concurrent runs that stream and call tools, while the model server faults on
every run (429 with Retry-After, 500, a dropped connection, a malformed chunk, a stall past the
heartbeat timeout: 20% of the runs each), the worker process is SIGKILLed twice and PostgreSQL
is restarted once. Every run must end DONE with nothing lost or doubled."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from agentrun.db.migrate import upgrade
from agentrun.protocol.events import EventType
from agentrun.settings import Settings, load_settings
from agentrun.stack import EmbeddedPostgres, ensure_database, free_port
from agentrun.store import Repository
from agentrun.testing.offline_model import Fault, OfflineModelServer
from tests.conftest import WorkerProcess, start_input
from tests.store_helpers import run_llm_calls, run_tool_calls
from workflows.agent import AgentRunWorkflow

RUNS = 20
RETRY_AFTER_S = 1.0
FAULTS = [
    Fault("http", 429, "rate limited", retry_after_s=RETRY_AFTER_S),
    Fault("http", 500, "upstream error"),
    Fault("drop", after_chunks=2),
    Fault("malformed", after_chunks=2),
    Fault("stall", stall_s=6, after_chunks=1),
]


@pytest.fixture
def chaos_pg(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path / "pg", free_port(), extra_options=("-c", "fsync=off"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def chaos_repo(chaos_pg: EmbeddedPostgres) -> AsyncIterator[Repository]:
    url = chaos_pg.url("chaos")
    ensure_database(url)
    sa_url = url.replace("postgresql://", "postgresql+psycopg://")
    await asyncio.to_thread(upgrade, sa_url)
    repo = Repository.connect(sa_url)
    try:
        yield repo
    finally:
        await repo.close()


async def test_runs_survive_model_faults_worker_kills_and_a_database_restart(
    temporal_env: WorkflowEnvironment,
    chaos_pg: EmbeddedPostgres,
    chaos_repo: Repository,
    tmp_path: Path,
) -> None:
    model = OfflineModelServer(tokens_per_second=150).start()
    settings: Settings = load_settings(
        temporal_address=temporal_env.client.service_client.config.target_host,
        database_url=chaos_pg.url("chaos"),
        openai_base_url=model.base_url,
        model="offline-scripted",
        task_queue=f"chaos-{uuid.uuid4()}",
        data_dir=tmp_path / "data",
        approval_floor={"bash": "auto"},  # the runs use approval="skip_all"
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    runs: dict[str, str] = {}
    try:
        handles = []
        for i in range(RUNS):
            run_id = f"chaos{i:02d}x{uuid.uuid4().hex[:8]}"
            prompt = f"chaos {run_id}: what is {i}*7, and the time?"
            model.script(run_id, [FAULTS[i % len(FAULTS)]])
            runs[run_id] = prompt
            handles.append(
                await temporal_env.client.start_workflow(
                    AgentRunWorkflow.run,
                    start_input(
                        run_id,
                        prompt,
                        approval="skip_all",
                        model_heartbeat_timeout_s=2,
                        model_max_attempts=30,
                        tool_heartbeat_timeout_s=3,
                    ),
                    id=run_id,
                    task_queue=settings.task_queue,
                )
            )
        await asyncio.sleep(2)
        worker.kill()  # first SIGKILL, mid-way through streams and tools
        worker.start()
        await asyncio.sleep(3)
        await asyncio.to_thread(chaos_pg.stop)  # PostgreSQL restart
        await asyncio.sleep(1)
        await asyncio.to_thread(chaos_pg.start)
        await asyncio.sleep(2)
        worker.kill()  # second SIGKILL
        worker.start()
        started = time.monotonic()
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 240)
        print(
            f"chaos: all {RUNS} runs finished {time.monotonic() - started:.1f}s after the last kill"
        )
    finally:
        worker.stop()
        model.stop()

    assert [r.status for r in results] == ["DONE"] * RUNS
    for run_id in runs:
        await _assert_exact_records(chaos_repo, run_id)
    _assert_retry_after_honoured(model, runs)
    outcomes = Counter(r.outcome for r in model.requests)
    for kind in ("http 429", "http 500", "drop", "malformed", "stall"):
        assert outcomes[kind] >= RUNS // len(FAULTS), outcomes


async def _assert_exact_records(repo: Repository, run_id: str) -> None:
    messages = await repo.run_messages(run_id)
    roles = Counter(m.role for m in messages)
    assert roles == {"user": 1, "assistant": 2, "tool": 2}, (run_id, roles)
    assert len({m.idempotency_key for m in messages}) == len(messages)
    calls = await run_tool_calls(repo, run_id)
    assert sorted(c.name for c in calls) == ["calculator", "current_time"], run_id
    assert all(c.status == "succeeded" and c.result for c in calls), [
        (run_id, c.status, c.result) for c in calls
    ]
    tool_msg_ids = sorted(m.tool_call_id or "" for m in messages if m.role == "tool")
    assert tool_msg_ids == sorted(c.tool_call_id for c in calls)
    llm = await run_llm_calls(repo, run_id)
    by_turn: dict[int, list[int]] = {}
    for c in llm:
        by_turn.setdefault(c.turn, []).append(c.attempt)
    assert sorted(by_turn) == [1, 2], run_id
    for turn, attempts in by_turn.items():
        # Every attempt has a row, failed and lost ones too, and exactly one succeeded.
        assert sorted(attempts) == list(range(1, max(attempts) + 1)), (run_id, turn, attempts)
        ok = [c for c in llm if c.turn == turn and c.status == "ok"]
        assert len(ok) == 1 and ok[0].attempt == max(attempts), (run_id, turn)
    assert any(c.status in ("error", "lost") for c in llm if c.turn == 1), run_id
    events = await repo.read_events(run_id, 0, limit=100_000)
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), run_id
    types = Counter(e.type for e in events)
    assert types[EventType.MESSAGE_COMPLETED] == 2 and types[EventType.TOOL_CALL] == 2, (
        run_id,
        types,
    )
    assert types[EventType.TOOL_RESULT] == 2 and types[EventType.LLM_USAGE] == 2, (run_id, types)
    statuses = [e.data["status"] for e in events if e.type == EventType.RUN_STATUS]
    assert statuses == ["QUEUED", "RUNNING", "DONE"], (run_id, statuses)
    resets = [
        (e.data["turn"], e.data["attempt"]) for e in events if e.type == EventType.STREAM_RESET
    ]
    assert len(resets) == len(set(resets)), (run_id, resets)  # one per retried attempt
    assert all(attempt > 1 for _, attempt in resets), (run_id, resets)
    run = await repo.get_run(run_id)
    assert (run.status, run.turns, run.tool_call_count) == ("DONE", 2, 2)
    assert run.llm_call_count == len(llm)


def _assert_retry_after_honoured(model: OfflineModelServer, runs: dict[str, str]) -> None:
    for run_id in runs:
        mine = sorted(
            (r for r in model.requests if run_id in _last_user(r.body)), key=lambda r: r.at
        )
        for earlier, later in itertools.pairwise(mine):
            if earlier.outcome == "http 429":
                waited = later.at - earlier.at
                assert waited >= RETRY_AFTER_S, (run_id, waited)


def _last_user(body: dict) -> str:  # type: ignore[type-arg]
    for m in reversed(body.get("messages") or []):
        if m.get("role") == "user":
            return str(m.get("content"))
    return ""
