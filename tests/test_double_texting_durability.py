"""Double-texting survives a worker killed with SIGKILL: messages queued behind a run that
waits for approval stay queued while no worker runs, and their runs start, in order, once a
new worker process comes and the active run ends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType as EventType_
from temporalio.testing import WorkflowEnvironment

from agentrun.client import AgentRunClient
from agentrun.contracts.queue import queue_workflow_id
from agentrun.protocol.events import EventType
from agentrun.protocol.statuses import Decision, RunStatus
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply
from tests.conftest import WorkerProcess, bash_call, next_event
from tests.double_texting_support import (
    BOUND,
    assert_one_at_a_time,
    ended,
    eventually,
    queue_rows,
    session_runs,
)


@pytest.fixture
def worker_process(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    wp = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        yield wp
    finally:
        wp.stop()


async def test_queued_runs_start_after_the_worker_is_killed_and_replaced(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    worker_process: WorkerProcess,
) -> None:
    client = AgentRunClient(temporal_env.client, settings.task_queue, store=repo)
    key = uuid.uuid4().hex
    session_id = f"s-{key[:12]}"
    model_server.script(f"first {key}", [bash_call("echo hi", "call_k"), Reply(text="first")])
    for name in ("second", "third"):
        model_server.script(f"{name} {key}", [Reply(text=f"{name} answer")])
    worker_process.start()
    active = await client.start(f"first {key}", session_id=session_id, config={"tools": ["bash"]})
    await next_event(repo, active.id, EventType.TOOL_APPROVAL_REQUESTED)
    queued = [
        await client.start(f"{name} {key}", session_id=session_id, if_busy="enqueue")
        for name in ("second", "third")
    ]
    pump = temporal_env.client.get_workflow_handle(queue_workflow_id(session_id))

    async def pump_waits() -> bool:
        # It took its steps (both messages seen) and sleeps until a wake or its next look.
        history = await pump.fetch_history()
        kinds = [e.event_type for e in history.events]
        done = kinds.count(EventType_.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
        return done >= 1 and kinds[-1] == EventType_.EVENT_TYPE_TIMER_STARTED

    assert await eventually(pump_waits)
    worker_process.kill()
    assert [r.state for r in await queue_rows(repo, session_id)] == ["queued", "queued"]
    worker_process.start()
    await active.decide("call_k", Decision.REJECT, reason="after the restart")
    for handle in queued:
        assert (await ended(repo, handle.id, BOUND)).status == RunStatus.DONE
    runs = await session_runs(repo, session_id)
    assert [r.id for r in runs] == [active.id, *(h.id for h in queued)]
    assert_one_at_a_time(runs)
    assert [r.state for r in await queue_rows(repo, session_id)] == ["started", "started"]
    events = await repo.read_events(queued[1].id, 0, limit=10_000)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == EventType.RUN_STATUS and events[-1].data["status"] == "DONE"
