"""The event hub (agentrun.store.hub) against a real PostgreSQL: every follower of every run gets
every event once and in order, from any cursor; a follower that stops reading holds up nobody
and later gets everything; the LISTEN connection killed mid-stream is reconnected with nothing
lost or repeated; a lost notification is covered by polling; hundreds of followers use no more
connections than the pool + 1; an unknown run raises; closing the hub or the consumer ends a
follower cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest
from sqlalchemy.exc import OperationalError

from agentrun.contracts import AgentConfig
from agentrun.db.models import RunEvent, RunStatus
from agentrun.protocol.events import MessageDeltaData
from agentrun.store import EventHub, EventIn, NotFoundError, Repository
from agentrun.store import hub as hub_module

BOUND = 30.0  # seconds: the most any wait below may take


@pytest.fixture
def app_name() -> str:
    return f"hub-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def small_repo(database_url: str, app_name: str) -> AsyncIterator[Repository]:
    """A Repository of its own (pool of 3, overflow 3), its connections named for counting."""
    repository = Repository.connect(f"{database_url}?application_name={app_name}", pool_size=3)
    try:
        yield repository
    finally:
        await repository.close()


async def _open(repo: Repository, run_id: str | None = None) -> str:
    run_id = run_id or f"run-{uuid.uuid4()}"
    await repo.open_run(
        run_id=run_id,
        session_id=f"s-{uuid.uuid4()}",
        model="test-model",
        config=AgentConfig(max_turns=3),
        prompt="question",
        workflow_run_id="wf-1",
    )
    return run_id  # seq 1 is its QUEUED event


async def _write(repo: Repository, run_id: str, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await repo.append_stream_event(run_id, MessageDeltaData(turn=1, attempt=1, text=str(i)))


async def _until(check: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Wait (bounded) until `check` holds."""
    deadline = time.monotonic() + BOUND
    while True:
        got = check()
        if got if isinstance(got, bool) else await got:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {BOUND} s: {what}")
        await asyncio.sleep(0.02)


class Collector:
    """A follower run as a task, recording the seqs it gets."""

    def __init__(self, events: AsyncGenerator[RunEvent, None]) -> None:
        self.seqs: list[int] = []
        self.events = events
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self.events:
            self.seqs.append(event.seq)

    async def done(self) -> list[int]:
        await asyncio.wait_for(self.task, BOUND)
        return self.seqs


async def test_followers_of_one_run_and_of_many_runs_get_every_event_once_in_order(
    small_repo: Repository, repo: Repository
) -> None:
    hub = small_repo.event_hub()
    runs = [await _open(repo) for _ in range(6)]
    per_run = 60
    # Ten followers a run, from the start and from cursors inside the stream to come.
    followers = {
        run_id: [(after, Collector(hub.follow(run_id, after))) for after in (0, 0, 0, 1, 5, 20)]
        for run_id in runs
    }
    followers[runs[0]] += [(0, Collector(hub.follow(runs[0], 0))) for _ in range(30)]
    await asyncio.gather(*(_write(repo, r, per_run) for r in runs))
    for run_id in runs:
        await repo.set_run_status(run_id, RunStatus.DONE)
    total = per_run + 2  # and QUEUED, DONE
    for collectors in followers.values():
        for after, c in collectors:
            assert await c.done() == list(range(after + 1, total + 1))
    stats = hub.stats()
    # One read a wake-up for all of a run's followers: far fewer than a read per follower.
    n_followers = sum(len(c) for c in followers.values())
    assert stats.reads < n_followers * per_run / 4, stats
    assert (stats.followers, stats.runs, stats.connects) == (0, 0, 1)


async def test_a_follower_resumes_from_any_cursor(small_repo: Repository, repo: Repository) -> None:
    hub = small_repo.event_hub()
    run_id = await _open(repo)
    await _write(repo, run_id, 10)
    live = Collector(hub.follow(run_id, 7))
    await _until(lambda: live.seqs == [8, 9, 10, 11], "the live follower caught up")
    # More than a page (hub_module.PAGE) in one commit, so one notification.
    await repo.append_events(
        run_id,
        [EventIn.of(MessageDeltaData(turn=1, attempt=1, text=str(i))) for i in range(10, 1310)],
    )
    await repo.set_run_status(run_id, RunStatus.DONE)
    total = 1312
    assert await live.done() == list(range(8, total + 1))
    assert [e.seq async for e in hub.follow(run_id, 0)] == list(range(1, total + 1))
    assert [e.seq async for e in hub.follow(run_id, 1305)] == list(range(1306, total + 1))
    assert [e.seq async for e in hub.follow(run_id, total)] == []
    deltas = [e async for e in hub.follow(run_id, 1) if e.seq <= 1301]
    assert [int(e.data["text"]) for e in deltas] == list(range(1300))


async def test_notifications_during_a_read_are_coalesced_into_the_next(
    small_repo: Repository, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()
    gate.set()
    waiting = asyncio.Event()
    read_runs = hub_module.read_runs

    async def gated(*args: Any, **kwargs: Any) -> Any:
        if not gate.is_set():
            waiting.set()
            await gate.wait()
        return await read_runs(*args, **kwargs)

    monkeypatch.setattr(hub_module, "read_runs", gated)
    hub = EventHub(small_repo, poll_interval=300)
    try:
        run_id = await _open(repo)
        followers = [Collector(hub.follow(run_id, 0)) for _ in range(10)]
        await _until(lambda: all(f.seqs == [1] for f in followers), "the followers are live")
        before = hub.stats().reads
        gate.clear()
        await _write(repo, run_id, 1)
        await asyncio.wait_for(waiting.wait(), BOUND)  # a read of the run is in flight
        await _write(repo, run_id, 30, start=1)  # 30 notifications while it is
        gate.set()
        await _until(lambda: all(len(f.seqs) == 32 for f in followers), "all 31 deltas")
        # The read in flight, and one more for everything that came during it: far fewer
        # reads than the 31 notifications. (PostgreSQL delivers NOTIFY asynchronously: on a
        # loaded machine a few may land after that second read started, and make one more.)
        assert hub.stats().reads - before <= 4, hub.stats()
        await repo.set_run_status(run_id, RunStatus.DONE)
        for f in followers:
            assert await f.done() == list(range(1, 34))
    finally:
        await hub.close()


async def test_a_failed_read_is_read_again(
    small_repo: Repository, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail = {"feed": 3, "catch_up": 0}
    read_runs = hub_module.read_runs

    async def flaky(conn: Any, cursors: dict[str, int], limit: int) -> Any:
        which = "catch_up" if list(cursors.values()) == [1] else "feed"
        if fail[which] and any(seq > 0 for seq in cursors.values()):
            fail[which] -= 1
            raise OperationalError("SELECT", {}, ConnectionError("the database went away"))
        return await read_runs(conn, cursors, limit)

    monkeypatch.setattr(hub_module, "read_runs", flaky)
    hub = EventHub(small_repo, buffer_size=2, poll_interval=0.2)
    try:
        run_id = await _open(repo)
        fast = Collector(hub.follow(run_id, 0))
        slow = hub.follow(run_id, 0)
        assert (await anext(slow)).seq == 1
        await _write(repo, run_id, 10)
        await _until(
            lambda: fast.seqs == list(range(1, 12)), "the fast follower, despite 3 failures"
        )
        assert fail["feed"] == 0
        # The slow one catches up from its cursor: that read fails once, and is made again.
        fail["catch_up"] = 1
        await repo.set_run_status(run_id, RunStatus.DONE)
        assert [e.seq async for e in slow] == list(range(2, 13))
        assert fail["catch_up"] == 0
        assert await fast.done() == list(range(1, 13))
    finally:
        await hub.close()


async def test_a_follower_that_stops_reading_does_not_delay_another(
    small_repo: Repository, repo: Repository
) -> None:
    hub = EventHub(small_repo, buffer_size=8, poll_interval=30)
    try:
        run_id = await _open(repo)
        slow = hub.follow(run_id, 0)
        assert (await anext(slow)).seq == 1  # subscribed, then never read until the end
        fast = Collector(hub.follow(run_id, 0))
        await _until(lambda: fast.seqs == [1], "the fast follower's first event")
        for i in range(60):
            await _write(repo, run_id, 1, start=i)
            # Each event reaches the fast follower while the slow one's buffer is full.
            await _until(lambda i=i: fast.seqs[-1:] == [i + 2], f"fast follower got seq {i + 2}")
        stats = hub.stats()
        assert stats.drops >= 1 and stats.lagging == 1, stats
        await repo.set_run_status(run_id, RunStatus.DONE)
        assert await fast.done() == list(range(1, 63))
        # The slow one, read at last: everything from its cursor, no gap, no repeat.
        assert [e.seq async for e in slow] == list(range(2, 63))
    finally:
        await hub.close()


async def _listener_pid(conn: psycopg.AsyncConnection, app: str) -> list[int]:
    rows = await conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", [app])
    return [r[0] for r in await rows.fetchall()]


async def test_the_listen_connection_killed_mid_stream_loses_and_repeats_nothing(
    small_repo: Repository, repo: Repository
) -> None:
    # No poll to speak of: what is written while nobody listens comes from the reconnection.
    hub = EventHub(small_repo, poll_interval=300)
    try:
        run_id = await _open(repo)
        followers = [Collector(hub.follow(run_id, 0)) for _ in range(5)]
        await _write(repo, run_id, 30)
        await _until(lambda: all(len(f.seqs) == 31 for f in followers), "first 30 events")
        first_pid = hub.stats().listener_pid
        assert first_pid is not None
        async with await psycopg.AsyncConnection.connect(repo.libpq_url, autocommit=True) as c:
            assert first_pid in await _listener_pid(c, hub_module.LISTEN_APPLICATION_NAME)
            await c.execute("SELECT pg_terminate_backend(%s)", [first_pid])
            await _write(repo, run_id, 30, start=30)  # while the hub reconnects
            await _until(lambda: hub.stats().connects == 2, "the hub reconnected")
            assert hub.stats().listener_pid not in (None, first_pid)
            await _until(lambda: all(len(f.seqs) == 61 for f in followers), "events 31-60")
            await _write(repo, run_id, 30, start=60)  # on the new connection
        await repo.set_run_status(run_id, RunStatus.DONE)
        for f in followers:
            assert await f.done() == list(range(1, 93))
    finally:
        await hub.close()


async def test_a_lost_notification_is_covered_by_polling(
    small_repo: Repository, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "NOTIFY_CHANNEL", f"nothing_{uuid.uuid4().hex}")
    hub = EventHub(small_repo, poll_interval=0.1)
    try:
        run_id = await _open(repo)
        follower = Collector(hub.follow(run_id, 0))
        await _write(repo, run_id, 20)
        await repo.set_run_status(run_id, RunStatus.CANCELED)
        assert await follower.done() == list(range(1, 23))
        assert hub.stats().connects == 1  # it listened, and heard nothing
    finally:
        await hub.close()


async def test_hundreds_of_followers_use_at_most_pool_plus_one_connections(
    small_repo: Repository, repo: Repository, app_name: str
) -> None:
    hub = small_repo.event_hub()
    runs = [await _open(repo) for _ in range(60)]
    followers = [Collector(hub.follow(r, 0)) for r in runs for _ in range(5)]  # 300
    peak = 0
    async with await psycopg.AsyncConnection.connect(repo.libpq_url, autocommit=True) as c:

        async def sample() -> None:
            nonlocal peak
            while True:
                pid = hub.stats().listener_pid
                row = await (
                    await c.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE application_name = %s OR pid = %s",
                        [app_name, pid or 0],
                    )
                ).fetchone()
                assert row is not None
                peak = max(peak, row[0])
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        try:
            await asyncio.gather(*(_write(repo, r, 10) for r in runs))
            for run_id in runs:
                await repo.set_run_status(run_id, RunStatus.DONE)
            for f in followers:
                assert await f.done() == list(range(1, 13))
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
    pool_size = small_repo.engine.pool.size()  # type: ignore[attr-defined]
    assert 2 <= peak <= pool_size + 1, (peak, pool_size)


async def test_an_unknown_run_raises_and_leaves_nothing_behind(small_repo: Repository) -> None:
    hub = small_repo.event_hub()
    with pytest.raises(NotFoundError):
        await anext(hub.follow(f"run-{uuid.uuid4()}"))
    with pytest.raises(ValueError, match="after_seq"):
        await anext(hub.follow("any", -1))
    assert (hub.stats().followers, hub.stats().runs) == (0, 0)


async def test_a_run_not_yet_opened_is_waited_for_without_until_terminal(
    small_repo: Repository, repo: Repository
) -> None:
    run_id = f"run-{uuid.uuid4()}"
    follower = small_repo.follow_events(run_id, 0, until_terminal=False)
    first = asyncio.create_task(anext(follower))
    await _until(lambda: small_repo.event_hub().stats().followers == 1, "subscribed")
    await _open(repo, run_id)
    assert (await asyncio.wait_for(first, BOUND)).seq == 1
    await follower.aclose()


async def test_closing_the_hub_ends_its_followers(small_repo: Repository, repo: Repository) -> None:
    hub = EventHub(small_repo)
    run_id = await _open(repo)
    followers = [Collector(hub.follow(run_id, 0)) for _ in range(3)]
    await _until(lambda: all(f.seqs == [1] for f in followers), "the followers are live")
    await hub.close()
    for f in followers:
        assert await f.done() == [1]  # ended without an error, the run still going
    assert [e async for e in hub.follow(run_id, 0)] == []  # a closed hub follows nothing


async def test_a_consumer_that_stops_unsubscribes(small_repo: Repository, repo: Repository) -> None:
    hub = small_repo.event_hub()
    run_id = await _open(repo)
    closed = hub.follow(run_id, 0)
    assert (await anext(closed)).seq == 1
    cancelled = Collector(hub.follow(run_id, 0))
    await _until(lambda: hub.stats().followers == 2 and cancelled.seqs == [1], "two followers")
    await closed.aclose()
    assert hub.stats().followers == 1
    cancelled.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await cancelled.task
    assert (hub.stats().followers, hub.stats().runs) == (0, 0)


async def test_the_repository_follows_through_one_hub(
    small_repo: Repository, repo: Repository
) -> None:
    run_id = await _open(repo)
    a = Collector(small_repo.follow_events(run_id, 0))
    b = Collector(small_repo.follow_events(run_id, 0, poll_interval=0.05))
    await _until(lambda: small_repo.event_hub().stats().followers == 2, "both through the hub")
    await repo.set_run_status(run_id, RunStatus.FAILED, error="boom")
    assert await a.done() == await b.done() == [1, 2]
    assert small_repo.event_hub().stats().connects == 1
