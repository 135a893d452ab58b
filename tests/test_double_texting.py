"""Double-texting through the typed client against the real servers: each policy (reject,
enqueue, interrupt, rollback) on a session with an active run, a session's default policy, two
messages racing on an idle session, a queued message cancelled, a run started without a policy
while messages wait; asserted on the database (queued rows, runs, message states) and the
event log."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import aclosing
from typing import Any, TypeVar

import pytest
from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.client import (
    AgentRunClient,
    MessageNotStarted,
    MessageRefused,
    RunHandle,
    SessionBusy,
    cancel_message,
    set_session_policy,
)
from agentrun.client.errors import SessionDeleted
from agentrun.client.forget import delete_session
from agentrun.contracts import AgentConfig
from agentrun.contracts.queue import (
    AdvanceInput,
    QueueStep,
    SessionQueueInput,
    StepKind,
    queue_workflow_id,
)
from agentrun.protocol.events import (
    EventType,
    MessageDeltaEvent,
    ToolApprovalRequestedEvent,
)
from agentrun.protocol.names import Activity
from agentrun.protocol.queue import IfBusy, MessageState, QueuedState
from agentrun.protocol.statuses import Decision, RunStatus
from agentrun.settings import Settings
from agentrun.store import Repository, SessionBusyError
from agentrun.store import queue as queue_store
from agentrun.testing.offline_model import OfflineModelServer, Reply
from tests.conftest import bash_call
from tests.double_texting_support import (
    BOUND,
    assert_one_at_a_time,
    ended,
    eventually,
    messages_of,
    queue_rows,
    sent_to_model,
    session_runs,
)
from workflows import ALL_WORKFLOWS, SANDBOX_RUNNER, session

E = TypeVar("E")


@pytest.fixture
def client(
    temporal_env: WorkflowEnvironment, settings: Settings, repo: Repository
) -> AgentRunClient:
    return AgentRunClient(temporal_env.client, settings.task_queue, store=repo)


@pytest.fixture
def session_id() -> str:
    return f"s-{uuid.uuid4().hex[:12]}"


async def first(run: RunHandle, kind: type[E]) -> E:
    async def scan() -> E:
        async with aclosing(run.follow(0, poll_interval=0.2, until_terminal=False)) as events:
            async for event in events:
                if isinstance(event, kind):
                    return event
        raise AssertionError("unreachable")

    return await asyncio.wait_for(scan(), BOUND)


async def waiting_run(
    client: AgentRunClient, model: OfflineModelServer, session_id: str, key: str
) -> tuple[RunHandle, str]:
    """A run of the session that waits for a person's approval: active until decided."""
    prompt = f"first {key}"
    model.script(prompt, [bash_call("echo hi"), Reply(text=f"first answer {key}")])
    run = await client.start(prompt, session_id=session_id, config={"tools": ["bash"]})
    asked = await first(run, ToolApprovalRequestedEvent)
    return run, asked.data.tool_call_id


async def streaming_run(
    client: AgentRunClient, model: OfflineModelServer, session_id: str, key: str
) -> RunHandle:
    """A run of the session that is streaming a long answer."""
    prompt = f"long {key}"
    model.script(prompt, [Reply(text="partial " * 400, chunk_chars=8, delay_s=0.03)])
    run = await client.start(prompt, session_id=session_id, config={"tools": []})
    await first(run, MessageDeltaEvent)
    return run


async def test_reject_refuses_with_the_active_run_and_writes_nothing(
    client: AgentRunClient, worker: Worker, model_server: OfflineModelServer, session_id: str
) -> None:
    key = uuid.uuid4().hex
    active, call_id = await waiting_run(client, model_server, session_id, key)
    with pytest.raises(SessionBusy) as refused:
        await client.start(f"second {key}", session_id=session_id, if_busy="reject")
    assert refused.value.active_run_id == active.id
    assert await queue_rows(client.store, session_id) == []  # type: ignore[arg-type]
    await active.decide(call_id, Decision.REJECT, reason="not now")
    assert (await active.result()).status == RunStatus.DONE
    assert [r.id for r in await session_runs(client.store, session_id)] == [active.id]  # type: ignore[arg-type]


async def test_enqueued_messages_run_after_the_active_run_in_arrival_order(
    client: AgentRunClient,
    worker: Worker,
    model_server: OfflineModelServer,
    repo: Repository,
    session_id: str,
) -> None:
    key = uuid.uuid4().hex
    active, call_id = await waiting_run(client, model_server, session_id, key)
    for name in ("second", "third"):
        model_server.script(f"{name} {key}", [Reply(text=f"{name} answer {key}")])
    second = await client.start(f"second {key}", session_id=session_id, if_busy="enqueue")
    third = await client.start(f"third {key}", session_id=session_id, if_busy=IfBusy.ENQUEUE)
    assert second.accepted is not None and third.accepted is not None
    assert (second.accepted.ahead, third.accepted.ahead) == (1, 2)
    assert second.accepted.active_run_id == active.id
    rows = await queue_rows(repo, session_id)
    assert [(r.run_id, r.state, r.policy) for r in rows] == [
        (second.id, "queued", "enqueue"),
        (third.id, "queued", "enqueue"),
    ]
    assert rows[0].position < rows[1].position
    assert await repo.find_run(second.id) is None  # accepted, not started
    await active.decide(call_id, Decision.REJECT, reason="later")
    await second.opened(timeout=BOUND)
    assert (await second.result()).final_text == f"second answer {key}"
    assert (await third.result()).final_text == f"third answer {key}"
    runs = await session_runs(repo, session_id)
    assert [r.id for r in runs] == [active.id, second.id, third.id]
    assert all(r.status == RunStatus.DONE for r in runs)
    assert_one_at_a_time(runs)
    assert {r.state for r in await queue_rows(repo, session_id)} == {QueuedState.STARTED}
    # The third run saw the second's exchange: one conversation, in order.
    seen = sent_to_model(model_server, f"third {key}")[0]
    assert f"second answer {key}" in [m.get("content") for m in seen]


async def test_interrupt_keeps_the_partial_answer_and_the_new_run_sees_it(
    client: AgentRunClient,
    worker: Worker,
    model_server: OfflineModelServer,
    repo: Repository,
    session_id: str,
) -> None:
    key = uuid.uuid4().hex
    active = await streaming_run(client, model_server, session_id, key)
    model_server.script(f"stop {key}", [Reply(text=f"new answer {key}")])
    new = await client.start(f"stop {key}", session_id=session_id, if_busy="interrupt")
    assert new.accepted is not None and new.accepted.active_run_id == active.id
    assert (await new.result()).final_text == f"new answer {key}"
    old = await ended(repo, active.id)
    assert old.status == RunStatus.CANCELED
    assert "interrupted by a newer message" in (old.error or "")
    partial = [m for m in await messages_of(repo, active.id) if m.role == "assistant"]
    assert len(partial) == 1 and partial[0].state == MessageState.INTERRUPTED
    assert partial[0].content and partial[0].content.startswith("partial ")
    events = await repo.read_events(active.id, 0, limit=10_000)
    interrupted = [e for e in events if e.type == EventType.MESSAGE_INTERRUPTED]
    assert len(interrupted) == 1 and interrupted[0].data["text_chars"] == len(partial[0].content)
    seen = sent_to_model(model_server, f"stop {key}")[0]
    assert [m["role"] for m in seen] == ["system", "user", "assistant", "user"]
    assert seen[2]["content"] == partial[0].content
    assert_one_at_a_time(await session_runs(repo, session_id))


async def test_rollback_leaves_the_active_runs_messages_out_of_the_conversation(
    client: AgentRunClient,
    worker: Worker,
    model_server: OfflineModelServer,
    repo: Repository,
    session_id: str,
) -> None:
    key = uuid.uuid4().hex
    model_server.script(f"before {key}", [Reply(text=f"kept answer {key}")])
    kept = await client.start(f"before {key}", session_id=session_id, config={"tools": []})
    assert (await kept.result()).status == RunStatus.DONE
    active, _ = await waiting_run(client, model_server, session_id, key)
    model_server.script(f"instead {key}", [Reply(text=f"instead answer {key}")])
    new = await client.start(f"instead {key}", session_id=session_id, if_busy="rollback")
    assert (await new.result()).final_text == f"instead answer {key}"
    assert (await ended(repo, active.id)).status == RunStatus.CANCELED
    rolled = await messages_of(repo, active.id)
    assert rolled and {m.state for m in rolled} == {MessageState.ROLLED_BACK}
    assert {m.state for m in await messages_of(repo, kept.id)} == {None}
    events = await repo.read_events(active.id, 0, limit=10_000)
    marks = [e for e in events if e.type == EventType.RUN_ROLLED_BACK]
    assert len(marks) == 1 and marks[0].data["by_run_id"] == new.id
    assert marks[0].data["messages"] == len(rolled)
    seen = sent_to_model(model_server, f"instead {key}")[0]
    contents = " ".join(str(m.get("content")) for m in seen)
    assert f"kept answer {key}" in contents and f"first {key}" not in contents
    assert "tool_calls" not in str(seen)


async def test_a_sessions_default_policy_applies_when_a_message_names_none(
    client: AgentRunClient,
    worker: Worker,
    model_server: OfflineModelServer,
    repo: Repository,
    session_id: str,
) -> None:
    key = uuid.uuid4().hex
    assert await set_session_policy(repo, session_id, "enqueue") == IfBusy.ENQUEUE
    active, call_id = await waiting_run(client, model_server, session_id, key)
    assert active.accepted is not None  # went through the queue (the session was idle)
    model_server.script(f"next {key}", [Reply(text=f"next answer {key}")])
    nxt = await client.start(f"next {key}", session_id=session_id)
    assert nxt.accepted is not None and nxt.accepted.policy == IfBusy.ENQUEUE
    with pytest.raises(SessionBusy):  # a message's own policy wins over the default
        await client.start(f"no {key}", session_id=session_id, if_busy="reject")
    await active.decide(call_id, Decision.REJECT, reason="no")
    assert (await nxt.result()).status == RunStatus.DONE
    await set_session_policy(repo, session_id, None)
    with pytest.raises(ValueError):
        await set_session_policy(repo, session_id, "sometimes")


async def test_two_messages_racing_on_an_idle_session_give_one_active_run(
    client: AgentRunClient,
    worker: Worker,
    model_server: OfflineModelServer,
    repo: Repository,
) -> None:
    key = uuid.uuid4().hex
    for policy in ("enqueue", "reject"):
        session_id = f"s-{uuid.uuid4().hex[:12]}"
        for n in (1, 2):
            model_server.script(f"race {n} {policy} {key}", [Reply(text=f"answer {n}")])
        outcomes = await asyncio.gather(
            *(
                client.start(f"race {n} {policy} {key}", session_id=session_id, if_busy=policy)
                for n in (1, 2)
            ),
            return_exceptions=True,
        )
        handles = [o for o in outcomes if isinstance(o, RunHandle)]
        refused = [o for o in outcomes if isinstance(o, SessionBusy)]
        assert handles, outcomes
        if policy == "reject":
            assert len(handles) == 1 and len(refused) == 1, outcomes
            assert refused[0].active_run_id == handles[0].id
        else:
            assert len(handles) == 2, outcomes
            assert sorted(h.accepted.ahead for h in handles if h.accepted) == [0, 1]
        for h in handles:
            assert (await h.result()).status == RunStatus.DONE
        runs = await session_runs(repo, session_id)
        assert len(runs) == len(handles)
        assert_one_at_a_time(runs)


async def test_a_queued_message_can_be_cancelled_before_its_run_starts(
    client: AgentRunClient,
    worker: Worker,
    model_server: OfflineModelServer,
    repo: Repository,
    session_id: str,
) -> None:
    key = uuid.uuid4().hex
    active, call_id = await waiting_run(client, model_server, session_id, key)
    model_server.script(f"keep {key}", [Reply(text=f"kept {key}")])
    dropped = await client.start(f"drop {key}", session_id=session_id, if_busy="enqueue")
    kept = await client.start(f"keep {key}", session_id=session_id, if_busy="enqueue")
    assert dropped.accepted is not None and kept.accepted is not None
    row = await cancel_message(repo, dropped.accepted.message_id, by="tester")
    assert row.state == QueuedState.CANCELLED and row.reason == "cancelled by tester"
    again = await cancel_message(repo, dropped.accepted.message_id)
    assert again.state == QueuedState.CANCELLED
    with pytest.raises(MessageNotStarted) as gone:
        await dropped.opened(timeout=5)
    assert gone.value.state == QueuedState.CANCELLED
    await active.decide(call_id, Decision.REJECT, reason="no")
    assert (await kept.result()).final_text == f"kept {key}"
    with pytest.raises(MessageRefused, match="only a waiting message can be cancelled"):
        await cancel_message(repo, kept.accepted.message_id)
    with pytest.raises(LookupError):
        await cancel_message(repo, dropped.accepted.message_id, tenant="someone-else")
    assert [r.id for r in await session_runs(repo, session_id)] == [active.id, kept.id]
    assert await repo.find_run(dropped.id) is None
    assert model_server.requests_for(f"drop {key}") == []


async def test_a_run_started_without_a_policy_never_jumps_the_queue(
    client: AgentRunClient, repo: Repository
) -> None:
    """The store's rule, without a worker: open_run refuses a run that is not the queue's
    while a message waits, and the queue's own run opens once the queue started it."""
    session_id, queued_run, legacy = (f"{p}-{uuid.uuid4().hex[:12]}" for p in "sql")
    async with repo.transaction() as db:
        accepted = await queue_store.submit(
            db,
            session_id=session_id,
            run_id=queued_run,
            prompt="waits",
            config=AgentConfig(),
            policy=IfBusy.ENQUEUE,
        )
    assert (accepted.state, accepted.ahead, accepted.active_run_id) == ("queued", 0, None)
    opening = {"session_id": session_id, "model": "m", "config": AgentConfig(), "prompt": "x"}
    with pytest.raises(SessionBusyError) as busy:
        await repo.open_run(run_id=legacy, **opening)
    assert busy.value.active_run_id == queued_run
    with pytest.raises(SessionBusy) as early:  # the client's own check, before a start
        await client.start("legacy", session_id=session_id, run_id=legacy)
    assert early.value.active_run_id == queued_run
    with pytest.raises(ValueError, match="queued message"):  # not started by the queue yet
        await repo.open_run(run_id=queued_run, **opening)
    async with repo.transaction() as db:
        step = await queue_store.next_step(db, session_id)
    assert step.kind == "start" and step.message is not None
    assert step.message.run_id == queued_run
    with pytest.raises(SessionBusyError):  # started, not opened yet: it holds the session
        await repo.open_run(run_id=legacy, **opening)
    assert (await repo.open_run(run_id=queued_run, **opening)).id == queued_run
    with pytest.raises(SessionBusyError) as held:
        await repo.open_run(run_id=legacy, **opening)
    assert held.value.active_run_id == queued_run
    assert await repo.find_run(legacy) is None


async def test_the_queue_workflow_ends_when_nothing_waits(
    client: AgentRunClient,
    temporal_env: WorkflowEnvironment,
    worker: Worker,
    model_server: OfflineModelServer,
    session_id: str,
) -> None:
    key = uuid.uuid4().hex
    model_server.script(f"only {key}", [Reply(text="only answer")])
    run = await client.start(f"only {key}", session_id=session_id, if_busy="enqueue")
    assert (await run.result()).status == RunStatus.DONE
    handle = temporal_env.client.get_workflow_handle(queue_workflow_id(session_id))
    steps = await asyncio.wait_for(handle.result(), BOUND)
    assert steps >= 2  # started the run, then found nothing waiting

    async def no_waiting() -> bool:
        return all(r.state != "queued" for r in await queue_rows(client.store, session_id))  # type: ignore[arg-type]

    assert await eventually(no_waiting)


async def test_a_sessions_queue_is_bounded_and_bad_text_is_refused(
    client: AgentRunClient, repo: Repository, session_id: str
) -> None:
    """Without a worker: the messages are recorded, none starts."""
    async with repo.transaction() as db:
        for n in range(queue_store.MAX_WAITING):
            await queue_store.submit(
                db,
                session_id=session_id,
                run_id=f"run-{session_id}-{n}",
                prompt=f"message {n}",
                config=AgentConfig(),
                policy=IfBusy.ENQUEUE,
            )
    with pytest.raises(MessageRefused, match="100 messages waiting"):
        await client.start("one more", session_id=session_id, if_busy="enqueue")
    with pytest.raises(ValueError, match="NUL"):
        await client.start("bad \x00 text", session_id=f"{session_id}-2", if_busy="enqueue")
    with pytest.raises(ValueError):
        await client.start("bad policy", session_id=f"{session_id}-3", if_busy="sometimes")
    rows = await queue_rows(repo, session_id)
    assert len(rows) == queue_store.MAX_WAITING and {r.state for r in rows} == {"queued"}
    assert await queue_rows(repo, f"{session_id}-2") == []
    assert await queue_rows(repo, f"{session_id}-3") == []


async def test_a_queued_run_refused_at_open_fails_its_message_and_the_next_one_goes(
    client: AgentRunClient,
    worker: Worker,
    model_server: OfflineModelServer,
    repo: Repository,
    session_id: str,
) -> None:
    key = uuid.uuid4().hex
    active, call_id = await waiting_run(client, model_server, session_id, key)
    bad = await client.start(
        f"bad {key}", session_id=session_id, config={"tools": ["no_such_tool"]}, if_busy="enqueue"
    )
    model_server.script(f"good {key}", [Reply(text="good answer")])
    good = await client.start(f"good {key}", session_id=session_id, if_busy="enqueue")
    await active.decide(call_id, Decision.REJECT, reason="no")
    assert (await good.result()).status == RunStatus.DONE
    rows = {r.run_id: r for r in await queue_rows(repo, session_id)}
    assert rows[bad.id].state == QueuedState.FAILED
    assert "no_such_tool" in (rows[bad.id].reason or "")
    assert rows[good.id].state == QueuedState.STARTED
    assert await repo.find_run(bad.id) is None
    with pytest.raises(MessageNotStarted):
        await bad.result()


async def test_the_queue_workflow_continues_as_new_and_keeps_counting(
    temporal_env: WorkflowEnvironment, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a stand-in step (registered under the real activity name): after MAX_STEPS steps
    the workflow continues as new, carrying its count, and ends when nothing waits."""
    monkeypatch.setattr(session, "MAX_STEPS", 3)
    calls: list[str] = []

    @activity.defn(name=Activity.ADVANCE_SESSION_QUEUE)
    async def advance(inp: AdvanceInput) -> QueueStep:
        calls.append(inp.session_id)
        if len(calls) < 7:
            return QueueStep(kind=StepKind.STARTED, run_id=f"run-{len(calls)}")
        return QueueStep(kind=StepKind.IDLE)

    sid = f"s-{uuid.uuid4().hex[:12]}"
    async with Worker(
        temporal_env.client,
        task_queue=task_queue,
        workflows=ALL_WORKFLOWS,
        activities=[advance],
        # The workers' runner: workflows/ passed through, so the patched MAX_STEPS applies.
        workflow_runner=SANDBOX_RUNNER,
    ):
        handle = await temporal_env.client.start_workflow(
            session.SessionQueueWorkflow.run,
            SessionQueueInput(session_id=sid, task_queue=task_queue),
            id=queue_workflow_id(sid),
            task_queue=task_queue,
        )
        assert await asyncio.wait_for(handle.result(), BOUND) == 7
    assert calls == [sid] * 7
    query = f"WorkflowId = '{queue_workflow_id(sid)}'"

    async def executions() -> list[Any]:
        found = [e async for e in temporal_env.client.list_workflows(query)]
        return found if len(found) == 3 else []  # 3 + 3 + 1 steps

    assert await eventually(executions, 20)


async def test_deleting_a_session_cancels_and_erases_its_queue(
    client: AgentRunClient,
    worker: Worker,
    model_server: OfflineModelServer,
    repo: Repository,
    session_id: str,
) -> None:
    key = uuid.uuid4().hex
    active, _ = await waiting_run(client, model_server, session_id, key)
    waiting = await client.start(f"secret {key}", session_id=session_id, if_busy="enqueue")
    deleted = await delete_session(
        client.temporal, repo, session_id, cancel_active=True, by="tester"
    )
    assert deleted.cancelled == [active.id]
    rows = await queue_rows(repo, session_id)
    assert {(r.run_id, r.state) for r in rows} == {(waiting.id, "cancelled")}
    assert all(r.prompt == "" and r.config == {} and r.reason is None for r in rows)
    assert await repo.find_run(waiting.id) is None
    with pytest.raises(SessionDeleted):
        await client.start(f"again {key}", session_id=session_id, if_busy="enqueue")
    with pytest.raises(SessionDeleted):
        await set_session_policy(repo, session_id, "enqueue")
    assert len(await queue_rows(repo, session_id)) == 1
