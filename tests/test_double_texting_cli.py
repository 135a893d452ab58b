"""Double-texting through the `agentrun` CLI (subprocesses against the real stack, a worker in
this process): `run --if-busy` with each policy, two CLI runs racing on an idle session, and
`agentrun queue list|cancel|policy`."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.client import AgentRunClient, RunHandle
from agentrun.db.models import QueuedMessage
from agentrun.protocol.events import EventType, MessageDeltaEvent, ToolApprovalRequestedEvent
from agentrun.protocol.queue import MessageState
from agentrun.protocol.statuses import Decision, RunStatus
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply
from tests.conftest import bash_call
from tests.double_texting_support import (
    assert_one_at_a_time,
    ended,
    eventually,
    messages_of,
    queue_rows,
    session_runs,
)
from tests.test_cli import agentrun, cli_env, spawn
from tests.test_double_texting import first


@pytest.fixture
def client(
    temporal_env: WorkflowEnvironment, settings: Settings, repo: Repository
) -> AgentRunClient:
    return AgentRunClient(temporal_env.client, settings.task_queue, store=repo)


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    return cli_env(settings)


@pytest.fixture
def session_id() -> str:
    return f"s-{uuid.uuid4().hex[:12]}"


async def waiting(
    client: AgentRunClient, model: OfflineModelServer, session_id: str, key: str
) -> tuple[RunHandle, str]:
    model.script(f"first {key}", [bash_call("echo hi"), Reply(text="first answer")])
    run = await client.start(f"first {key}", session_id=session_id, config={"tools": ["bash"]})
    return run, (await first(run, ToolApprovalRequestedEvent)).data.tool_call_id


def run_args(prompt: str, session_id: str, policy: str) -> list[str]:
    return ["run", prompt, "--session", session_id, "--if-busy", policy, "--no-input", "--json"]


async def test_cli_reject_and_enqueue(
    client: AgentRunClient,
    worker: Worker,
    model_server: OfflineModelServer,
    repo: Repository,
    env: dict[str, str],
    session_id: str,
) -> None:
    key = uuid.uuid4().hex
    active, call_id = await waiting(client, model_server, session_id, key)
    refused = await agentrun(env, *run_args(f"no {key}", session_id, "reject"))
    assert refused.code == 1, refused
    assert active.id in refused.err and "active run" in refused.err
    assert await queue_rows(repo, session_id) == []
    model_server.script(f"later {key}", [Reply(text=f"later answer {key}")])
    proc = await spawn(env, *run_args(f"later {key}", session_id, "enqueue"))
    rows = await eventually(lambda: queue_rows(repo, session_id))
    assert [(r.state, r.policy) for r in rows] == [("queued", "enqueue")]
    assert proc.returncode is None  # it waits for its turn
    await active.decide(call_id, Decision.REJECT, reason="no")
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()
    summary = [line for line in out.decode().splitlines() if '"message_id"' in line]
    assert summary and rows[0].id in summary[-1] and '"status": "DONE"' in summary[-1]
    runs = await session_runs(repo, session_id)
    assert [r.id for r in runs] == [active.id, rows[0].run_id]
    assert_one_at_a_time(runs)


@pytest.mark.parametrize("policy", ["interrupt", "rollback"])
async def test_cli_interrupt_and_rollback(
    client: AgentRunClient,
    worker: Worker,
    model_server: OfflineModelServer,
    repo: Repository,
    env: dict[str, str],
    session_id: str,
    policy: str,
) -> None:
    key = uuid.uuid4().hex
    model_server.script(f"long {key}", [Reply(text="partial " * 600, chunk_chars=8, delay_s=0.03)])
    active = await client.start(f"long {key}", session_id=session_id, config={"tools": []})
    await first(active, MessageDeltaEvent)
    model_server.script(f"new {key}", [Reply(text=f"new answer {key}")])
    done = await agentrun(env, *run_args(f"new {key}", session_id, policy))
    assert done.code == 0, done
    assert (await ended(repo, active.id)).status == RunStatus.CANCELED
    states = {m.role: m.state for m in await messages_of(repo, active.id)}
    if policy == "interrupt":
        assert states == {"user": None, "assistant": MessageState.INTERRUPTED}
    else:
        assert set(states.values()) == {MessageState.ROLLED_BACK}
        events = await repo.read_events(active.id, 0, limit=10_000)
        assert EventType.RUN_ROLLED_BACK in [e.type for e in events]
    shown = await agentrun(env, "transcript", "--session", session_id, "--json")
    wanted = "interrupted" if policy == "interrupt" else "rolled_back"
    assert wanted in [line["state"] for line in shown.json_lines() if line["run_id"] == active.id]
    runs = await session_runs(repo, session_id)
    assert [r.status for r in runs] == [RunStatus.CANCELED, RunStatus.DONE]
    assert_one_at_a_time(runs)


async def test_two_cli_runs_racing_on_an_idle_session(
    worker: Worker,
    model_server: OfflineModelServer,
    repo: Repository,
    env: dict[str, str],
) -> None:
    key = uuid.uuid4().hex
    for policy, codes in (("enqueue", [0, 0]), ("reject", [0, 1])):
        session_id = f"s-{uuid.uuid4().hex[:12]}"
        for n in (1, 2):
            # Answers that take seconds: the two processes start at once, but not within
            # milliseconds of each other (the client and HTTP tests race them that close).
            slow = Reply(text=f"answer {n} " * 60, chunk_chars=9, delay_s=0.1)
            model_server.script(f"race {n} {policy} {key}", [slow])
        done = await asyncio.gather(
            *(
                agentrun(env, *run_args(f"race {n} {policy} {key}", session_id, policy))
                for n in (1, 2)
            )
        )
        assert sorted(d.code for d in done) == codes, done
        runs = await session_runs(repo, session_id)
        assert len(runs) == codes.count(0)
        assert all(r.status == RunStatus.DONE for r in runs)
        assert_one_at_a_time(runs)


async def test_cli_queue_commands(
    client: AgentRunClient,
    worker: Worker,
    model_server: OfflineModelServer,
    repo: Repository,
    env: dict[str, str],
    session_id: str,
) -> None:
    key = uuid.uuid4().hex
    shown = await agentrun(env, "queue", "policy", session_id, "--json")
    assert shown.json_lines() == [{"session_id": session_id, "if_busy": None}]
    assert (await agentrun(env, "queue", "policy", session_id, "enqueue")).code == 0
    active, call_id = await waiting(client, model_server, session_id, key)
    # The session's default applies to a run without --if-busy.
    proc = await spawn(env, "run", f"queued {key}", "--session", session_id, "--no-input")

    async def two_rows() -> list[QueuedMessage]:
        rows = await queue_rows(repo, session_id)
        return rows if len(rows) == 2 else []

    rows = await eventually(two_rows)
    waiting_rows = [r for r in rows if r.state == "queued"]
    assert len(waiting_rows) == 1 and waiting_rows[0].policy == "enqueue"
    listed = await agentrun(env, "queue", "list", session_id, "--json")
    assert [line["message_id"] for line in listed.json_lines()] == [waiting_rows[0].id]
    cancelled = await agentrun(env, "queue", "cancel", waiting_rows[0].id)
    assert cancelled.code == 0 and "will not start" in cancelled.out
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and b"cancelled" in err, err
    started = [r for r in rows if r.run_id == active.id]
    assert started and started[0].state == "started"
    refused = await agentrun(env, "queue", "cancel", started[0].id)
    assert refused.code == 1 and "cancel its run instead" in refused.err
    missing = await agentrun(env, "queue", "cancel", "msg-nothing")
    assert missing.code == 4
    everything = await agentrun(env, "queue", "list", session_id, "--all", "--json")
    assert [line["state"] for line in everything.json_lines()] == ["started", "cancelled"]
    bad = await agentrun(env, "queue", "policy", session_id, "sometimes")
    assert bad.code == 2
    await active.decide(call_id, Decision.REJECT, reason="no")
    assert (await active.result()).status == RunStatus.DONE
    assert [r.id for r in await session_runs(repo, session_id)] == [active.id]
