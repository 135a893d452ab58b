"""The Postgres store against a real PostgreSQL: idempotent writes, forward-only statuses,
gapless in-commit-order event seqs, and NOTIFY."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from agentrun.db.migrate import current_revision, head_revision, upgrade
from agentrun.db.models import LlmCall, Message, RunEvent, RunStatus, ToolCall, ToolCallStatus
from agentrun.db.repository import (
    NOTIFY_CHANNEL,
    EventIn,
    NotFoundError,
    Repository,
    SessionBusyError,
    idempotency_key,
)
from agentrun.protocol.events import EventType, MessageDeltaData, StreamResetData, ToolCallData


async def _new_run(repo: Repository, run_id: str, session_id: str | None = None) -> str:
    session_id = session_id or f"s-{uuid.uuid4()}"
    await repo.create_run(run_id, session_id, "test-model", {"max_turns": 3})
    return session_id


def test_migrations_are_at_head_and_repeatable(database_url: str) -> None:
    assert current_revision(database_url) == head_revision()
    assert upgrade(database_url) == head_revision()


async def test_every_write_repeated_returns_the_first_row(repo: Repository, run_id: str) -> None:
    session_id = f"s-{uuid.uuid4()}"
    s1 = await repo.ensure_session(session_id, {"user": "a"})
    s2 = await repo.ensure_session(session_id, {"user": "b"})
    assert s2.metadata_ == {"user": "a"} and s1.created_at == s2.created_at

    r1 = await repo.create_run(run_id, session_id, "m1", {"a": 1})
    r2 = await repo.create_run(run_id, session_id, "m2", {"a": 2})
    assert (r2.model, r2.config, r2.created_at) == ("m1", {"a": 1}, r1.created_at)

    kwargs = dict(
        key=idempotency_key(run_id, 0, "user"),
        session_id=session_id,
        run_id=run_id,
        turn=0,
        role="user",
    )
    m1 = await repo.record_message(content="first", **kwargs)  # type: ignore[arg-type]
    m2 = await repo.record_message(content="second", **kwargs)  # type: ignore[arg-type]
    assert m2.id == m1.id and m2.content == "first"
    assert await repo.count(Message, run_id=run_id) == 1

    t1 = await repo.record_tool_call(
        run_id=run_id, turn=1, tool_call_id="call_1", name="ls", arguments='{"path": "."}'
    )
    t2 = await repo.record_tool_call(
        run_id=run_id, turn=1, tool_call_id="call_1", name="rm", arguments="{}"
    )
    assert t2.id == t1.id and t2.name == "ls" and t2.arguments == '{"path": "."}'

    _c1, tm1 = await repo.record_tool_result(
        session_id=session_id, run_id=run_id, tool_call_id="call_1", result="a b", is_error=False
    )
    c2, tm2 = await repo.record_tool_result(
        session_id=session_id, run_id=run_id, tool_call_id="call_1", result="boom", is_error=True
    )
    assert (c2.result, c2.is_error, c2.status) == ("a b", False, ToolCallStatus.SUCCEEDED)
    assert tm2.id == tm1.id and tm2.content == "a b"
    assert await repo.count(ToolCall, run_id=run_id) == 1

    l1 = await repo.record_llm_call(
        run_id=run_id, turn=1, attempt=1, model="m1", status="ok", prompt_tokens=10
    )
    l2 = await repo.record_llm_call(
        run_id=run_id, turn=1, attempt=1, model="m1", status="error", prompt_tokens=99
    )
    assert l2.id == l1.id and l2.status == "ok" and l2.prompt_tokens == 10
    assert await repo.count(LlmCall, run_id=run_id) == 1

    e1 = await repo.append_event(run_id, _call("first"), key="k1")
    e2 = await repo.append_event(run_id, _call("second"), key="k1")
    assert (e2.seq, e2.data["name"]) == (e1.seq, "first")

    run, changed = await repo.set_run_status(run_id, RunStatus.RUNNING)
    again, changed_again = await repo.set_run_status(run_id, RunStatus.RUNNING)
    assert changed and not changed_again and again.last_event_seq == run.last_event_seq

    final = await repo.get_run(run_id)
    assert (final.llm_call_count, final.tool_call_count) == (1, 1)
    events = await repo.read_events(run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.type for e in events] == [
        EventType.TOOL_RESULT,
        EventType.TOOL_CALL,
        EventType.RUN_STATUS,
    ]


async def test_late_running_cannot_replace_done(repo: Repository, run_id: str) -> None:
    await _new_run(repo, run_id)
    await repo.set_run_status(run_id, RunStatus.RUNNING)
    _, done = await repo.set_run_status(run_id, RunStatus.DONE, final_text="ok")
    run, late = await repo.set_run_status(run_id, RunStatus.RUNNING)
    assert done and not late and run.status == RunStatus.DONE
    _, failed = await repo.set_run_status(run_id, RunStatus.FAILED, error="late")
    _, queued = await repo.set_run_status(run_id, RunStatus.QUEUED)
    run = await repo.get_run(run_id)
    assert not failed and not queued
    assert (run.status, run.error, run.final_text) == ("DONE", None, "ok")
    statuses = [
        e.data["status"] for e in await repo.read_events(run_id) if e.type == EventType.RUN_STATUS
    ]
    assert statuses == ["RUNNING", "DONE"]


async def test_status_never_moves_back_to_queued(repo: Repository, run_id: str) -> None:
    await _new_run(repo, run_id)
    await repo.set_run_status(run_id, RunStatus.WAITING_APPROVAL)
    _, back = await repo.set_run_status(run_id, RunStatus.QUEUED)
    _, running = await repo.set_run_status(run_id, RunStatus.RUNNING)
    assert not back and running


async def test_unknown_run_is_a_clear_error(repo: Repository) -> None:
    with pytest.raises(NotFoundError, match="no run with id 'nope'"):
        await repo.append_event("nope", StreamResetData(turn=1, attempt=2))
    with pytest.raises(NotFoundError, match="no run"):
        await repo.set_run_status("nope", RunStatus.DONE)
    with pytest.raises(NotFoundError, match="no run with id 'nope'"):
        await repo.append_stream_event("nope", _delta(1, 0))


async def test_concurrent_writers_get_gapless_seqs_and_a_follower_sees_each_once(
    repo: Repository, run_id: str
) -> None:
    await _new_run(repo, run_id)
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

    total = writers * per_writer + 1
    rows = await repo.read_events(run_id, 0, limit=10_000)
    assert [r.seq for r in rows] == list(range(1, total + 1))
    assert seen == list(range(1, total + 1))
    assert sorted(seen_payloads) == [(w, i) for w in range(writers) for i in range(per_writer)]
    for w in range(writers):
        assert [i for ww, i in seen_payloads if ww == w] == list(range(per_writer))
    assert (await repo.get_run(run_id)).last_event_seq == total
    assert await repo.count(RunEvent, run_id=run_id) == total


async def test_follower_resumes_from_a_cursor(repo: Repository, run_id: str) -> None:
    await _new_run(repo, run_id)
    await repo.append_events(run_id, [EventIn.of(_delta(1, i)) for i in range(10)])
    await repo.set_run_status(run_id, RunStatus.DONE)
    first = [e.seq async for e in repo.follow_events(run_id, 0)]
    rest = [e.seq async for e in repo.follow_events(run_id, 4)]
    assert first == list(range(1, 12)) and rest == list(range(5, 12))


async def test_notify_wakes_a_listener(repo: Repository, run_id: str) -> None:
    await _new_run(repo, run_id)
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


async def test_second_active_run_on_a_session_is_refused(repo: Repository) -> None:
    session_id = f"s-{uuid.uuid4()}"
    first, second = f"run-{uuid.uuid4()}", f"run-{uuid.uuid4()}"
    await repo.create_run(first, session_id, "m", claim_session=True)
    with pytest.raises(SessionBusyError, match="already has an active run"):
        await repo.create_run(second, session_id, "m", claim_session=True)
    assert await repo.find_run(second) is None
    # The holder repeating its own start is fine, and a finished holder frees the session.
    await repo.create_run(first, session_id, "m", claim_session=True)
    await repo.set_run_status(first, RunStatus.DONE)
    run = await repo.create_run(second, session_id, "m", claim_session=True)
    assert run.status == RunStatus.QUEUED


def _call(name: str) -> ToolCallData:
    return ToolCallData(turn=1, tool_call_id="call_1", name=name, arguments="{}")


def _delta(turn: int, i: int) -> MessageDeltaData:
    """A delta whose text carries a number, so a reader can check order and completeness."""
    return MessageDeltaData(turn=turn, attempt=1, text=str(i))
