"""The Postgres store against a real PostgreSQL, through the functions production calls:
every write repeated is a no-op that returns the first record, statuses only move forward,
event seqs are gapless and in commit order under concurrent writers, followers resume from a
cursor and wake on NOTIFY (or poll without it), a session holds one run at a time, and model
attempts that were lost or late are recorded as such."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest

from agentrun.contracts import AgentConfig, PendingCall, RecordedDecision, ToolCallRequest
from agentrun.db.migrate import current_revision, head_revision, upgrade
from agentrun.db.models import Message, RunEvent, RunStatus, ToolCall, ToolCallStatus
from agentrun.protocol.events import (
    EventType,
    MessageDeltaData,
    StreamResetData,
    ToolCallData,
    arguments_sha256,
)
from agentrun.protocol.statuses import LlmCallStatus
from agentrun.store import (
    NOTIFY_CHANNEL,
    EventIn,
    LlmCallValues,
    NotFoundError,
    Repository,
    RunEndedError,
    RunOwnedError,
    SessionBusyError,
    events,
)
from tests.store_helpers import count, model_turn, ok_values, run_llm_calls, run_tool_calls


async def _open(
    repo: Repository, run_id: str, session_id: str | None = None, execution: str | None = "wf-1"
) -> str:
    session_id = session_id or f"s-{uuid.uuid4()}"
    await repo.open_run(
        run_id=run_id,
        session_id=session_id,
        model="test-model",
        config=AgentConfig(max_turns=3),
        prompt="question",
        workflow_run_id=execution,
    )
    return session_id


async def _types(repo: Repository, run_id: str) -> list[str]:
    return [e.type for e in await repo.read_events(run_id, 0, limit=10_000)]


def test_migrations_are_at_head_and_repeatable(database_url: str) -> None:
    assert current_revision(database_url) == head_revision()
    assert upgrade(database_url) == head_revision()


# -- runs and sessions --------------------------------------------------------------------------


async def test_open_run_repeated_by_its_execution_writes_nothing(
    repo: Repository, run_id: str
) -> None:
    session_id = await _open(repo, run_id)
    first = await repo.get_run(run_id)
    await _open(repo, run_id, session_id)
    again = await repo.get_run(run_id)
    assert (again.created_at, again.last_event_seq) == (first.created_at, 1)
    assert (first.status, first.model, first.config["max_turns"]) == ("QUEUED", "test-model", 3)
    assert first.workflow_run_id == "wf-1"
    assert await count(repo, Message, run_id=run_id, role="user", turn=0) == 1
    [queued] = await repo.read_events(run_id)
    assert queued.idempotency_key == "status:QUEUED"
    assert queued.data == {
        "status": "QUEUED",
        "session_id": session_id,
        "model": "test-model",
        "prompt": "question",
    }


async def test_open_run_refuses_another_session_execution_or_an_ended_run(
    repo: Repository, run_id: str
) -> None:
    session_id = await _open(repo, run_id)
    with pytest.raises(ValueError, match="already exists in session"):
        await _open(repo, run_id, f"s-{uuid.uuid4()}")
    with pytest.raises(RunOwnedError, match="another execution"):
        await _open(repo, run_id, session_id, execution="wf-2")
    await repo.set_run_status(run_id, RunStatus.DONE)
    with pytest.raises(RunEndedError, match="already ended"):
        await _open(repo, run_id, session_id)
    assert await repo.session_holder(session_id) is None


async def test_a_run_opened_before_executions_were_recorded_is_taken_by_the_first(
    repo: Repository, run_id: str
) -> None:
    session_id = await _open(repo, run_id, execution=None)
    await _open(repo, run_id, session_id, execution="wf-7")
    assert (await repo.get_run(run_id)).workflow_run_id == "wf-7"
    with pytest.raises(RunOwnedError):
        await _open(repo, run_id, session_id, execution="wf-8")


async def test_a_session_holds_one_run_at_a_time(repo: Repository) -> None:
    session_id = f"s-{uuid.uuid4()}"
    first, second = f"run-{uuid.uuid4()}", f"run-{uuid.uuid4()}"
    assert await repo.session_holder(session_id) is None
    await _open(repo, first, session_id)
    assert await repo.session_holder(session_id) == first
    # The client's read-only pre-check and the open's claim apply the same rule.
    await repo.check_session_free(session_id, first)
    with pytest.raises(SessionBusyError, match="already has an active run"):
        await repo.check_session_free(session_id, second)
    with pytest.raises(SessionBusyError, match="already has an active run") as info:
        await _open(repo, second, session_id)
    assert info.value.active_run_id == first
    assert await repo.find_run(second) is None
    assert await count(repo, Message, run_id=second) == 0
    # The holder repeating its own open is fine, and a finished holder frees the session.
    await _open(repo, first, session_id)
    await repo.set_run_status(first, RunStatus.DONE)
    assert await repo.session_holder(session_id) is None
    await _open(repo, second, session_id)
    assert (await repo.get_run(second)).status == RunStatus.QUEUED
    assert await repo.session_holder(session_id) == second


async def test_late_running_cannot_replace_done(repo: Repository, run_id: str) -> None:
    await _open(repo, run_id)
    await repo.set_run_status(run_id, RunStatus.RUNNING)
    _, done = await repo.set_run_status(run_id, RunStatus.DONE, final_text="ok")
    run, late = await repo.set_run_status(run_id, RunStatus.RUNNING)
    assert done and not late and run.status == RunStatus.DONE
    _, failed = await repo.set_run_status(run_id, RunStatus.FAILED, error="late")
    _, queued = await repo.set_run_status(run_id, RunStatus.QUEUED)
    run = await repo.get_run(run_id)
    assert not failed and not queued
    assert (run.status, run.error, run.final_text) == ("DONE", None, "ok")
    assert run.finished_at is not None
    statuses = [
        (e.data["status"], e.data.get("previous"))
        for e in await repo.read_events(run_id)
        if e.type == EventType.RUN_STATUS
    ]
    assert statuses == [("QUEUED", None), ("RUNNING", "QUEUED"), ("DONE", "RUNNING")]


async def test_status_never_moves_back_to_queued(repo: Repository, run_id: str) -> None:
    await _open(repo, run_id)
    _, waiting = await repo.set_run_status(run_id, RunStatus.WAITING_APPROVAL)
    _, back = await repo.set_run_status(run_id, RunStatus.QUEUED)
    _, running = await repo.set_run_status(run_id, RunStatus.RUNNING)
    _, failed = await repo.set_run_status(run_id, RunStatus.FAILED, error="boom")
    assert waiting and not back and running and failed
    [*_, last] = await repo.read_events(run_id)
    assert last.data == {"status": "FAILED", "previous": "RUNNING", "error": "boom"}
    assert (await repo.get_run(run_id)).error == "boom"


async def test_unknown_run_is_a_clear_error(repo: Repository) -> None:
    with pytest.raises(NotFoundError, match="no run with id 'nope'"):
        await repo.append_event("nope", StreamResetData(turn=1, attempt=2))
    with pytest.raises(NotFoundError, match="no run"):
        await repo.set_run_status("nope", RunStatus.DONE)
    with pytest.raises(NotFoundError, match="no run with id 'nope'"):
        await repo.append_stream_event("nope", _delta(1, 0))
    with pytest.raises(NotFoundError, match="no run with id 'nope'"):
        await repo.get_run("nope")
    with pytest.raises(NotFoundError, match="has no tool call 'c'"):
        await repo.get_tool_call("nope", "c")


# -- turns --------------------------------------------------------------------------------------


async def test_a_model_turn_is_recorded_once(repo: Repository, run_id: str) -> None:
    session_id = await _open(repo, run_id)
    calls = [ToolCallRequest(id="call_1", name="ls", arguments='{"path": "."}')]
    m1, c1, inserted = await repo.record_model_turn(
        run_id=run_id,
        session_id=session_id,
        turn=1,
        attempt=1,
        model="test-model",
        text="listing",
        tool_calls=calls,
        call_values=ok_values(latency_ms=120, time_to_first_token_ms=30, response_id="r1"),
    )
    # A retried attempt that got to the end too finds the record and writes nothing.
    m2, c2, again = await repo.record_model_turn(
        run_id=run_id,
        session_id=session_id,
        turn=1,
        attempt=2,
        model="test-model",
        text="something else",
        tool_calls=[ToolCallRequest(id="call_9", name="rm", arguments="{}")],
        call_values=ok_values(prompt_tokens=99),
    )
    assert inserted and not again
    assert (m2.id, m2.content, c2.id, c2.attempt) == (m1.id, "listing", c1.id, 1)
    assert m1.tool_calls == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "ls", "arguments": '{"path": "."}'},
        }
    ]
    assert (c1.status, c1.prompt_tokens, c1.response_id) == (LlmCallStatus.OK, 10, "r1")
    [row] = await run_tool_calls(repo, run_id)
    assert (row.tool_call_id, row.name, row.status) == ("call_1", "ls", ToolCallStatus.PENDING)
    assert row.arguments_sha256 == arguments_sha256('{"path": "."}')
    run = await repo.get_run(run_id)
    assert (run.turns, run.prompt_tokens, run.completion_tokens) == (1, 10, 5)
    assert (run.llm_call_count, run.tool_call_count) == (1, 1)
    assert await _types(repo, run_id) == [
        EventType.RUN_STATUS,
        EventType.MESSAGE_COMPLETED,
        EventType.TOOL_CALL,
        EventType.LLM_USAGE,
    ]
    usage = (await repo.read_events(run_id))[-1].data
    assert (usage["latency_ms"], usage["time_to_first_token_ms"]) == (120, 30)
    found = await repo.find_turn(run_id, 1)
    assert found is not None and found[0].id == m1.id and found[1] is not None
    assert await repo.find_turn(run_id, 2) is None
    assert await repo.final_assistant_text(run_id) == "listing"


async def test_a_failed_attempt_is_one_row(repo: Repository, run_id: str) -> None:
    await _open(repo, run_id)
    values = LlmCallValues(http_status=503, error="HTTP 503", latency_ms=7)
    first = await repo.record_llm_call(
        run_id=run_id, turn=1, attempt=1, model="m", status=LlmCallStatus.ERROR, values=values
    )
    again = await repo.record_llm_call(
        run_id=run_id,
        turn=1,
        attempt=1,
        model="m",
        status=LlmCallStatus.ERROR,
        values=LlmCallValues(http_status=500, error="other"),
    )
    assert again.id == first.id and (again.http_status, again.error) == (503, "HTTP 503")
    assert (await repo.get_run(run_id)).llm_call_count == 1
    assert [c.status for c in await repo.model_attempts(run_id, 1)] == ["error"]


async def test_lost_and_database_only_attempts_are_marked_once(
    repo: Repository, run_id: str
) -> None:
    session_id = await _open(repo, run_id)
    # Attempt 4 starts: 1 and 3 left no row (lost), 2 failed on the database (known from the
    # heartbeat details), so it never reached the model.
    assert await repo.mark_lost_attempts(run_id, 1, 4, "m", not_lost=[2]) == 2
    assert await repo.mark_lost_attempts(run_id, 1, 4, "m", not_lost=[2]) == 0
    rows = await run_llm_calls(repo, run_id)
    assert [(c.attempt, c.status) for c in rows] == [
        (1, LlmCallStatus.LOST),
        (2, LlmCallStatus.DB_ERROR),
        (3, LlmCallStatus.LOST),
    ]
    # The model budget counts what reached the model or may have: not the database failure.
    assert [c.attempt for c in await repo.model_attempts(run_id, 1)] == [1, 3]
    # Attempt 3 was not lost after all: its late success is the turn's one ok row.
    _, call, inserted = await repo.record_model_turn(
        run_id=run_id,
        session_id=session_id,
        turn=1,
        attempt=3,
        model="m",
        text="late",
        tool_calls=[],
        call_values=ok_values(),
    )
    assert inserted and (call.attempt, call.status, call.error) == (3, "ok", None)
    assert (await repo.get_run(run_id)).llm_call_count == 3
    assert [c.status for c in await run_llm_calls(repo, run_id)] == ["lost", "db_error", "ok"]


async def test_context_reads(repo: Repository, run_id: str) -> None:
    session_id = await _open(repo, run_id)
    await model_turn(repo, run_id, session_id, text="one")
    await model_turn(repo, run_id, session_id, turn=2, text="two")
    messages = await repo.run_messages(run_id)
    assert [m.content for m in messages] == ["question", "one", "two"]
    assert [m.id for m in await repo.session_messages(session_id)] == [m.id for m in messages]
    newest = await repo.session_messages_before(session_id, messages[-1].id, 1)
    assert [m.content for m in newest] == ["one"]
    everything = await repo.session_messages_before(session_id, None, 10)
    assert [m.content for m in everything] == ["two", "one", "question"]


# -- tool calls ---------------------------------------------------------------------------------


async def test_waits_decisions_attempts_and_results_are_recorded_once(
    repo: Repository, run_id: str
) -> None:
    session_id = await _open(repo, run_id)
    await repo.set_run_status(run_id, RunStatus.RUNNING)
    bash = ToolCallRequest(id="call_b", name="bash", arguments='{"command": "ls"}')
    client = ToolCallRequest(id="call_c", name="pick", arguments="{}")
    await model_turn(repo, run_id, session_id, bash, client)
    waits = [_pending(bash, "approval"), _pending(client, "client_result")]
    run, changed = await repo.request_waits(run_id, waits)
    _, changed_again = await repo.request_waits(run_id, waits)
    assert changed and not changed_again and run.status == RunStatus.WAITING_APPROVAL
    statuses = {c.tool_call_id: c.status for c in await run_tool_calls(repo, run_id)}
    assert statuses == {"call_b": "pending_approval", "call_c": "pending"}

    edited = '{"command": "ls -la"}'
    first = await repo.record_decision(run_id, _decision("approve_with_edits", edited, "ann"))
    second = await repo.record_decision(run_id, _decision("reject", bash.arguments, "bob"))
    assert (second.decision, second.decided_by) == ("approve_with_edits", "ann")
    assert (first.decided_arguments, first.status) == (edited, ToolCallStatus.APPROVED)

    row, started = await repo.claim_tool_attempt(run_id, "call_b", max_attempts=2)
    assert started and (row.attempts, row.status) == (1, ToolCallStatus.RUNNING)
    row, started = await repo.claim_tool_attempt(run_id, "call_b", max_attempts=2)
    row, refused = await repo.claim_tool_attempt(run_id, "call_b", max_attempts=2)
    assert started and not refused and row.attempts == 2

    async def record(result: str, is_error: bool) -> tuple[ToolCall, Message]:
        return await repo.record_tool_result(
            session_id=session_id,
            run_id=run_id,
            tool_call_id="call_b",
            result=result,
            is_error=is_error,
        )

    _, m1 = await record("a b", False)
    c2, m2 = await record("boom", True)
    assert (c2.result, c2.is_error, c2.status) == ("a b", False, ToolCallStatus.SUCCEEDED)
    assert (m2.id, m2.content, m2.role, m2.name) == (m1.id, "a b", "tool", "bash")
    _, after_result = await repo.claim_tool_attempt(run_id, "call_b")
    assert not after_result and (await repo.get_tool_call(run_id, "call_b")).attempts == 2
    assert await count(repo, ToolCall, run_id=run_id) == 2

    types = await _types(repo, run_id)
    assert types[-5:] == [
        EventType.TOOL_APPROVAL_REQUESTED,
        EventType.TOOL_RESULT_REQUESTED,
        EventType.RUN_STATUS,
        EventType.TOOL_DECIDED,
        EventType.TOOL_RESULT,
    ]
    decided = (await repo.read_events(run_id))[-2].data
    assert (decided["decision"], decided["arguments"], decided["edited"]) == (
        "approve_with_edits",
        edited,
        True,
    )


async def test_a_decision_on_an_unknown_call_is_a_clear_error(
    repo: Repository, run_id: str
) -> None:
    await _open(repo, run_id)
    with pytest.raises(NotFoundError, match="has no tool call 'call_b'"):
        await repo.record_decision(run_id, _decision("approve", "{}", "ann"))
    assert await _types(repo, run_id) == [EventType.RUN_STATUS]


# -- the event log ------------------------------------------------------------------------------


async def test_an_event_with_a_key_is_appended_once(repo: Repository, run_id: str) -> None:
    await _open(repo, run_id)
    e1 = await repo.append_event(run_id, _call("first"), key="k1")
    e2 = await repo.append_event(run_id, _call("second"), key="k1")
    assert (e2.seq, e2.data["name"]) == (e1.seq, "first")
    batch = [EventIn.of(_call("x"), key="k2"), EventIn.of(_call("y"), key="k2")]
    appended = await repo.append_events(run_id, [*batch, EventIn.of(_call("z"), key="k1")])
    assert [(e.seq, e.data["name"]) for e in appended] == [(2, "first"), (3, "x")]
    assert (await repo.get_run(run_id)).last_event_seq == 3
    assert await count(repo, RunEvent, run_id=run_id) == 3


async def test_concurrent_writers_get_gapless_seqs_and_a_follower_sees_each_once(
    repo: Repository, run_id: str
) -> None:
    await _open(repo, run_id)
    writers, per_writer = 8, 500
    seen: list[int] = []
    seen_payloads: list[tuple[int, int]] = []

    async def follower() -> None:
        async for event in repo.follow_events(run_id, 0, poll_interval=0.5):
            seen.append(event.seq)
            if event.type == EventType.MESSAGE_DELTA:
                seen_payloads.append((event.data["turn"], int(event.data["text"])))

    async def writer(w: int) -> None:
        # Half the writers take the general path, half the single-statement stream path.
        for i in range(per_writer):
            if w % 2:
                await repo.append_stream_event(run_id, _delta(w, i))
            else:
                await repo.append_events(run_id, [EventIn.of(_delta(w, i))])

    follow_task = asyncio.create_task(follower())
    await asyncio.gather(*(writer(w) for w in range(writers)))
    await repo.set_run_status(run_id, RunStatus.DONE)
    await asyncio.wait_for(follow_task, 60)

    total = writers * per_writer + 2  # and QUEUED, DONE
    rows = await repo.read_events(run_id, 0, limit=10_000)
    assert [r.seq for r in rows] == list(range(1, total + 1))
    assert seen == list(range(1, total + 1))
    assert sorted(seen_payloads) == [(w, i) for w in range(writers) for i in range(per_writer)]
    for w in range(writers):
        assert [i for ww, i in seen_payloads if ww == w] == list(range(per_writer))
    assert (await repo.get_run(run_id)).last_event_seq == total
    assert await count(repo, RunEvent, run_id=run_id) == total


async def test_follower_resumes_from_a_cursor(repo: Repository, run_id: str) -> None:
    await _open(repo, run_id)
    await repo.append_events(run_id, [EventIn.of(_delta(1, i)) for i in range(10)])
    await repo.set_run_status(run_id, RunStatus.DONE)
    first = [e.seq async for e in repo.follow_events(run_id, 0)]
    rest = [e.seq async for e in repo.follow_events(run_id, 5)]
    assert first == list(range(1, 13)) and rest == list(range(6, 13))


async def test_the_direct_follower_without_listen_polls(
    repo: Repository, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The old per-follower path, kept for the benchmark (the hub's polling: tests/test_hub.py).
    async def no_listener(_url: str) -> Any:
        return None

    monkeypatch.setattr(events, "_listen", no_listener)
    await _open(repo, run_id)
    got: list[int] = []

    async def follow() -> None:
        async for event in events.follow_direct(repo, run_id, 0, poll_interval=0.05):
            got.append(event.seq)

    task = asyncio.create_task(follow())
    await repo.append_stream_event(run_id, _delta(1, 1))
    await repo.set_run_status(run_id, RunStatus.CANCELED)
    await asyncio.wait_for(task, 30)
    assert got == [1, 2, 3]


async def test_notify_wakes_a_listener(repo: Repository, run_id: str) -> None:
    await _open(repo, run_id)
    async with await psycopg.AsyncConnection.connect(repo.libpq_url, autocommit=True) as conn:
        await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        event = await repo.append_event(run_id, _delta(1, 1))

        async def first_for_run() -> str:
            async for note in conn.notifies(timeout=10):
                if note.payload.startswith(f"{run_id}:"):
                    return note.payload
            raise AssertionError("no notification within 10 s")

        assert await asyncio.wait_for(first_for_run(), 15) == f"{run_id}:{event.seq}"
        seq = await repo.append_stream_event(run_id, _delta(1, 2))
        assert await asyncio.wait_for(first_for_run(), 15) == f"{run_id}:{seq}"


# -- helpers ------------------------------------------------------------------------------------


def _pending(call: ToolCallRequest, kind: str) -> PendingCall:
    return PendingCall(
        tool_call_id=call.id,
        name=call.name,
        kind=kind,  # type: ignore[arg-type]
        arguments=call.arguments,
        arguments_sha256=arguments_sha256(call.arguments),
        turn=1,
    )


def _decision(decision: str, arguments: str, by: str) -> RecordedDecision:
    return RecordedDecision(
        tool_call_id="call_b",
        name="bash",
        decision=decision,  # type: ignore[arg-type]
        arguments=arguments,
        decided_by=by,
    )


def _call(name: str) -> ToolCallData:
    return ToolCallData(turn=1, tool_call_id="call_1", name=name, arguments="{}")


def _delta(turn: int, i: int) -> MessageDeltaData:
    """A delta whose text carries a number, so a reader can check order and completeness."""
    return MessageDeltaData(turn=turn, attempt=1, text=str(i))


async def test_the_tool_catalog_keeps_what_any_worker_of_a_queue_offered(repo: Repository) -> None:
    queue = f"tq-{uuid.uuid4()}"
    assert await repo.known_tools(queue) == set()
    await repo.publish_tools(queue, ["ls", "bash"])
    await repo.publish_tools(queue, ["ls", "save_note"])  # another build, same queue
    await repo.publish_tools(queue, ["ls"])  # a repeat refreshes, removes nothing
    assert await repo.known_tools(queue) == {"ls", "bash", "save_note"}
    assert await repo.known_tools(f"{queue}-other") == set()
