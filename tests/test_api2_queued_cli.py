"""`agentrun follow RUN` of a queued message's run (README "Sessions and double-texting"): it
says the run is queued, waits, and follows the run once it starts; a message withdrawn while
it waits ends it with exit 1 and why. A client handle made from the bare run id waits too."""

from __future__ import annotations

import asyncio
import json
import uuid

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.client import AgentRunClient, cancel_message
from agentrun.protocol.queue import IfBusy
from agentrun.protocol.statuses import Decision, RunStatus
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply
from tests.http_support import BOUND
from tests.test_cli import cli_env, spawn
from tests.test_double_texting_cli import waiting


async def first_line(stream: asyncio.StreamReader) -> str:
    return (await asyncio.wait_for(stream.readline(), BOUND)).decode()


async def test_follow_waits_for_a_queued_run_and_ends_on_a_withdrawn_one(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    model_server: OfflineModelServer,
    repo: Repository,
) -> None:
    client = AgentRunClient(temporal_env.client, settings.task_queue, store=repo)
    env = cli_env(settings)
    sid, key = f"s-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    active, call_id = await waiting(client, model_server, sid, key)
    model_server.script(f"next {key}", [Reply(text=f"next answer {key}")])
    queued = await client.start(f"next {key}", session_id=sid, if_busy=IfBusy.ENQUEUE)
    never = await client.start(f"never {key}", session_id=sid, if_busy=IfBusy.ENQUEUE)
    assert queued.accepted is not None and never.accepted is not None

    followers = [await spawn(env, "follow", h.id, "--json", "--no-input") for h in (queued, never)]
    for proc, h in zip(followers, (queued, never), strict=True):
        assert proc.stderr is not None
        said = await first_line(proc.stderr)
        assert f"run {h.id} is queued" in said and "waiting for it to start" in said, said
    assert "1 queued message(s) ahead" in said  # the second waits behind the first
    assert all(p.returncode is None for p in followers)

    await cancel_message(repo, never.accepted.message_id)
    out, err = await asyncio.wait_for(followers[1].communicate(), BOUND)
    assert followers[1].returncode == 1, err.decode()
    assert "cancelled" in err.decode() and "never started" in err.decode()

    # A library handle made from the bare run id waits for it too (it used to say no such run).
    opened = asyncio.create_task(client.handle(queued.id).opened(BOUND))
    await active.decide(call_id, Decision.REJECT, reason="no")
    await asyncio.wait_for(opened, BOUND)
    assert await repo.find_run(queued.id) is not None
    out, err = await asyncio.wait_for(followers[0].communicate(), BOUND)
    assert followers[0].returncode == 0, err.decode()
    lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert any(f"next answer {key}" in json.dumps(line) for line in lines)
    assert (await repo.get_run(queued.id)).status == RunStatus.DONE
