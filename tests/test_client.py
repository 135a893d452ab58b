"""agentrun.client against the real servers (the session's Temporal dev server and PostgreSQL, a
worker in this process, the offline model): start (and start again), handles, decisions and
their typed refusals, client-side results, cancel, status, typed follow from a cursor, list."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any, TypeVar

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.client import (
    AgentRunClient,
    AlreadyDecided,
    AlreadySubmitted,
    AnyEvent,
    DecisionRefused,
    HashMismatch,
    Refused,
    RunEnded,
    RunHandle,
    RunNotFound,
    SchemaMismatch,
    SessionBusy,
    UnknownToolCall,
    WrongWaitKind,
    list_query,
)
from agentrun.contracts import ClientTool
from agentrun.protocol.events import (
    EventType,
    MessageDeltaEvent,
    RunStatusEvent,
    ToolApprovalRequestedEvent,
    ToolDecidedEvent,
    ToolResultRequestedEvent,
    UnknownEvent,
)
from agentrun.protocol.statuses import Decision, RunStatus, WaitKind
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from tests.conftest import bash_call

E = TypeVar("E")
BOUND = 60


@pytest.fixture
def client(
    temporal_env: WorkflowEnvironment, settings: Settings, repo: Repository
) -> AgentRunClient:
    return AgentRunClient(temporal_env.client, settings.task_queue, store=repo)


async def first(run: RunHandle, kind: type[E]) -> E:
    """The run's first event of this class, waiting for it (bounded) as a follower would."""

    async def scan() -> E:
        async with aclosing(run.follow(0, poll_interval=0.2, until_terminal=False)) as events:
            async for event in events:
                if isinstance(event, kind):
                    return event
        raise AssertionError("unreachable: followed without end")

    return await asyncio.wait_for(scan(), BOUND)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 20) -> Any:
    """Poll a condition (Temporal's visibility is eventually consistent), bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.2)


async def all_events(run: RunHandle, after: int = 0) -> list[AnyEvent]:
    return [e async for e in run.follow(after, poll_interval=0.2)]


async def test_start_is_idempotent_while_running_and_refused_once_ended(
    client: AgentRunClient,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"start twice {run_id}"
    model_server.script(prompt, [bash_call("echo once", "call_once"), Reply(text="Once.")])
    session = f"s-{uuid.uuid4()}"
    run = await client.start(
        prompt, run_id=run_id, session_id=session, config={"workspace": str(tmp_path)}
    )
    assert run.id == run_id
    requested = await first(run, ToolApprovalRequestedEvent)
    again = await client.start(prompt, run_id=run_id, session_id=session)
    first_exec = (await run.describe()).run_id
    assert again.id == run_id and (await again.describe()).run_id == first_exec

    # The session is held by the running run: another run id on it is refused before starting.
    other = f"run-{uuid.uuid4()}"
    with pytest.raises(SessionBusy) as busy:
        await client.start("another", run_id=other, session_id=session)
    assert busy.value.active_run_id == run_id
    with pytest.raises(RunNotFound):
        await client.handle(other).status()

    await run.decide(
        "call_once", Decision.APPROVE, arguments_sha256=requested.data.arguments_sha256
    )
    result = await asyncio.wait_for(run.result(), BOUND)
    assert result.status == RunStatus.DONE and result.final_text == "Once."
    with pytest.raises(RunEnded) as ended:
        await client.start(prompt, run_id=run_id, session_id=session)
    assert ended.value.status == RunStatus.DONE and "start a new run id" in str(ended.value)


async def test_decide_and_status_through_a_handle(
    client: AgentRunClient,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"decide typed {run_id}"
    model_server.script(prompt, [bash_call("echo original", "call_t"), Reply(text="Decided.")])
    run = await client.start(prompt, run_id=run_id, config={"workspace": str(tmp_path)})
    requested = await first(run, ToolApprovalRequestedEvent)
    view = await client.handle(run_id).status()
    assert view.status == RunStatus.WAITING_APPROVAL
    [pending] = view.pending
    assert (pending.tool_call_id, pending.kind) == ("call_t", WaitKind.APPROVAL)
    assert pending.arguments_sha256 == requested.data.arguments_sha256

    # Any refusal is a Refused (and still a WorkflowUpdateFailedError), and changes nothing.
    with pytest.raises(DecisionRefused):
        await run.decide("call_t", Decision.APPROVE, arguments_sha256="0" * 64)
    with pytest.raises(Refused):
        await run.decide("call_nope", Decision.APPROVE)
    assert (await repo.get_tool_call(run_id, "call_t")).decision is None

    recorded = await run.decide(
        "call_t",
        Decision.APPROVE_WITH_EDITS,
        arguments={"command": "echo edited"},
        arguments_sha256=requested.data.arguments_sha256,
        decided_by="tester",
    )
    assert recorded.decision == Decision.APPROVE_WITH_EDITS and recorded.decided_by == "tester"
    decided = await first(run, ToolDecidedEvent)
    assert decided.data.edited and json.loads(decided.data.arguments) == {"command": "echo edited"}
    assert (await asyncio.wait_for(run.result(), BOUND)).status == RunStatus.DONE
    # Too late: the run is over.
    with pytest.raises(RunEnded):
        await run.decide("call_t", Decision.REJECT, reason="late")
    with pytest.raises(RunNotFound):
        await client.handle(f"run-{uuid.uuid4()}").decide("call_t", Decision.APPROVE)


async def test_a_decision_by_signal(
    client: AgentRunClient,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"signal typed {run_id}"
    model_server.script(prompt, [bash_call("echo s", "call_s"), Reply(text="Signalled.")])
    run = await client.start(prompt, run_id=run_id, config={"workspace": str(tmp_path)})
    requested = await first(run, ToolApprovalRequestedEvent)
    await run.signal_decision(
        "call_s",
        Decision.REJECT,
        reason="by signal",
        decided_by="signaller",
        arguments_sha256=requested.data.arguments_sha256,
    )
    assert (await asyncio.wait_for(run.result(), BOUND)).status == RunStatus.DONE
    call = await repo.get_tool_call(run_id, "call_s")
    assert (call.decision, call.decided_by) == (Decision.REJECT, "signaller")
    with pytest.raises(RunNotFound):
        await client.handle(f"run-{uuid.uuid4()}").signal_decision("c", Decision.APPROVE)


async def test_refused_decisions_raise_the_type_that_says_why(
    client: AgentRunClient,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    # Needs the workflow to raise ApplicationError(type=ErrorType.X) from its update validators.
    prompt = f"refusals {run_id}"
    model_server.script(prompt, [bash_call("echo x", "call_r"), Reply(text="Refusals.")])
    run = await client.start(prompt, run_id=run_id, config={"workspace": str(tmp_path)})
    requested = await first(run, ToolApprovalRequestedEvent)
    sha = requested.data.arguments_sha256
    with pytest.raises(UnknownToolCall):
        await run.decide("call_unknown", Decision.APPROVE)
    with pytest.raises(HashMismatch):
        await run.decide("call_r", Decision.APPROVE, arguments_sha256="0" * 64)
    with pytest.raises(SchemaMismatch):
        await run.decide(
            "call_r", Decision.APPROVE_WITH_EDITS, arguments={"cmd": "ls"}, arguments_sha256=sha
        )
    assert (await repo.get_tool_call(run_id, "call_r")).decision is None
    await run.decide("call_r", Decision.REJECT, reason="no", arguments_sha256=sha)
    with pytest.raises((AlreadyDecided, RunEnded)):
        await run.decide("call_r", Decision.APPROVE, arguments_sha256=sha)
    assert (await asyncio.wait_for(run.result(), BOUND)).status == RunStatus.DONE


async def test_client_side_results_and_their_refusals(
    client: AgentRunClient,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"client result {run_id}"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("get_weather", {"city": "Oslo"}, id="call_w")]),
            Reply(text="Sunny."),
        ],
    )
    weather = ClientTool(
        name="get_weather",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
    )
    run = await client.start(prompt, run_id=run_id, config={"tools": [], "client_tools": [weather]})
    requested = await first(run, ToolResultRequestedEvent)
    assert requested.data.tool_call_id == "call_w"
    with pytest.raises(UnknownToolCall):
        await run.submit_tool_result("call_x", {"sky": "?"})
    assert await run.submit_tool_result("call_w", {"sky": "sunny"}) == "accepted"
    assert (await asyncio.wait_for(run.result(), BOUND)).final_text == "Sunny."


async def test_refused_results_raise_the_type_that_says_why(
    client: AgentRunClient,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    # Needs the workflow to raise ApplicationError(type=ErrorType.X) from its update validators.
    prompt = f"client refusals {run_id}"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("get_weather", {"city": "Oslo"}, id="call_w")]),
            Reply(text="Rainy."),
        ],
    )
    weather = ClientTool(name="get_weather")
    run = await client.start(prompt, run_id=run_id, config={"tools": [], "client_tools": [weather]})
    await first(run, ToolResultRequestedEvent)
    with pytest.raises(UnknownToolCall):
        await run.submit_tool_result("call_x", "?")
    with pytest.raises(WrongWaitKind):
        await run.decide("call_w", Decision.APPROVE)
    assert await run.submit_tool_result("call_w", "rain") == "accepted"
    with pytest.raises((AlreadySubmitted, RunEnded)):
        await run.submit_tool_result("call_w", "rain again")
    assert (await asyncio.wait_for(run.result(), BOUND)).final_text == "Rainy."


async def test_cancel_and_follow_typed_events(
    client: AgentRunClient,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"cancel typed {run_id}"
    model_server.script(prompt, [Reply(text="slow " * 500, delay_s=0.02)])
    run = await client.start(prompt, run_id=run_id, config={"tools": []})
    await first(run, MessageDeltaEvent)
    answer = await run.cancel(reason="enough", requested_by="tester")
    assert answer.status == RunStatus.CANCELED
    again = await run.cancel()
    assert "already ended" in again.message
    events = await all_events(run)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert not any(isinstance(e, UnknownEvent) for e in events)
    last = events[-1]
    assert isinstance(last, RunStatusEvent) and last.data.status == RunStatus.CANCELED
    with pytest.raises(RunNotFound):
        await client.handle(f"run-{uuid.uuid4()}").cancel()


async def test_follow_resumes_from_a_cursor_without_loss_or_repeats(
    client: AgentRunClient,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"resume typed {run_id}"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("calculator", {"expression": "6*7"})]),
            Reply(text="Forty-two."),
        ],
    )
    run = await client.start(prompt, run_id=run_id)
    # Read part of the stream live, stop, then resume from the last seq seen.
    head: list[AnyEvent] = []
    async with aclosing(run.follow(0, poll_interval=0.2)) as events:
        async for event in events:
            head.append(event)
            if event.type == EventType.TOOL_RESULT:
                break
    tail = await all_events(run, head[-1].seq)
    whole = await all_events(run)
    assert [e.seq for e in head + tail] == [e.seq for e in whole]
    assert head + tail == whole
    types = {e.type for e in whole}
    assert {EventType.TOOL_CALL, EventType.TOOL_RESULT, EventType.MESSAGE_COMPLETED} <= types
    text = "".join(e.data.text for e in whole if isinstance(e, MessageDeltaEvent))
    assert text == "Forty-two."


async def test_list_runs_with_filters(
    client: AgentRunClient,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    session = f"s-{uuid.uuid4()}"
    done_prompt = f"list done {run_id}"
    model_server.script(done_prompt, [Reply(text="Listed.")])
    done = await client.start(done_prompt, run_id=run_id, session_id=session, config={"tools": []})
    assert (await asyncio.wait_for(done.result(), BOUND)).status == RunStatus.DONE

    waiting_id = f"run-{uuid.uuid4()}"
    waiting_prompt = f"list waiting {waiting_id}"
    model_server.script(waiting_prompt, [bash_call("echo w", "call_lw"), Reply(text="W.")])
    waiting = await client.start(
        waiting_prompt,
        run_id=waiting_id,
        session_id=session,
        config={"workspace": str(tmp_path)},
    )
    await first(waiting, ToolApprovalRequestedEvent)

    async def listed(**filters: Any) -> set[str]:
        return {r.run_id for r in await client.list_runs(**filters)}

    mine = {run_id, waiting_id}
    assert await eventually(lambda: _equal(listed(session_id=session), mine))
    assert await eventually(
        lambda: _equal(listed(session_id=session, waiting_approval=True), {waiting_id})
    )
    assert await eventually(
        lambda: _equal(listed(session_id=session, status=RunStatus.DONE), {run_id})
    )
    [row] = [r for r in await client.list_runs(session_id=session) if r.run_id == run_id]
    assert row.status == RunStatus.DONE and row.session_id == session and row.started
    assert (await listed(session_id=session, limit=1)) <= mine
    assert len(await listed(session_id=session, limit=1)) == 1
    await waiting.cancel(reason="done listing")
    query = list_query(status="DONE", session_id="it's", waiting_approval=True)
    assert query == (
        "WorkflowType = 'agentrun.AgentRun' AND ExecutionStatus != 'ContinuedAsNew' AND "
        "AgentRunStatus = 'DONE' AND "
        "AgentSessionId = 'its' AND AgentWaitingApproval = true"
    )


async def _equal(values: Awaitable[set[str]], expected: set[str]) -> bool:
    return await values == expected
