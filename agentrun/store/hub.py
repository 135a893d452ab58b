"""The event hub: one LISTEN connection per process fans a run's events out to its followers.

Every follower of a process goes through one `EventHub`:

- One psycopg connection LISTENs on NOTIFY_CHANNEL (payloads "<run_id>:<seq>") and wakes the
  *feed* of that run. A feed reads the run's new events ONCE for all its followers, through the
  Engine's pool (at most `pool_size` reads at a time, so a process holds pool + 1 connections
  however many follow). Notifications that arrive while a read is in flight set the feed's
  wake flag once: they are coalesced into the next read.
- Each follower has a bounded buffer. A follower whose buffer would overflow is dropped to
  catch-up: its buffer is emptied, it reads from its own cursor in the database (pages of
  PAGE events) until it is at the end, then rejoins the live feed. Anything between its cursor
  and the first live event it then receives is read from the database too, so nothing is lost
  or repeated, and a slow follower never holds up the feed or the others.
- The LISTEN connection reconnects with backoff when it drops; each (re)connection wakes every
  feed, which re-reads from its cursor (anything committed while nobody listened). Every
  `poll_interval` one query over all followed runs wakes the feeds whose run moved: the
  fallback for a lost notification.
- A follower ends after the run's terminal status once its cursor has reached the run's
  last_event_seq (as `agentrun.store.events.follow_direct`); closing the hub ends every
  follower; a follower whose consumer stops (aclose, cancellation) unsubscribes.

Events handed to followers are shared between them: treat them as read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.types import String

from agentrun.db.models import RunEvent
from agentrun.protocol.names import NOTIFY_CHANNEL
from agentrun.protocol.statuses import TERMINAL_RUN_STATUSES
from agentrun.store.engine import Engine, NotFoundError

log = logging.getLogger(__name__)

LISTEN_APPLICATION_NAME = "agentrun-hub"
PAGE = 500  # events per database read
_TERMINAL = frozenset(s.value for s in TERMINAL_RUN_STATUSES)
_DB_ERRORS = (SQLAlchemyError, psycopg.Error, OSError)
_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 5.0
_KEEPALIVE = 30.0  # seconds without a notification before the listener checks its connection

# The run's position and its events after a cursor, from one snapshot: every event up to
# last_event_seq committed with the run row, so an unfilled page reaches it.
_READ = text(
    """
    SELECT r.status, r.last_event_seq, e.id, e.seq, e.type, e.data, e.idempotency_key,
           e.created_at
    FROM runs r
    LEFT JOIN LATERAL (
        SELECT id, seq, type, data, idempotency_key, created_at FROM run_events
        WHERE run_id = r.id AND seq > :after ORDER BY seq LIMIT :limit
    ) e ON true
    WHERE r.id = :run_id
    ORDER BY e.seq
    """
)
_POSITIONS = text("SELECT id, status, last_event_seq FROM runs WHERE id = ANY(:ids)").bindparams(
    bindparam("ids", type_=ARRAY(String))
)


@dataclass(frozen=True)
class _Position:
    exists: bool = False
    terminal: bool = False
    last_seq: int = 0

    def merged(self, other: _Position) -> _Position:
        """Positions only move forward (a terminal status is never left)."""
        return _Position(
            self.exists or other.exists,
            self.terminal or other.terminal,
            max(self.last_seq, other.last_seq),
        )


@dataclass(frozen=True)
class HubStats:
    """What the hub is doing, for tests, benchmarks and health checks."""

    listening: bool
    listener_pid: int | None
    runs: int
    followers: int
    lagging: int  # followers catching up from the database
    reads: int  # feed reads since start (one per wake-up of a run, for all its followers)
    catch_up_reads: int  # reads of single followers (start, gaps, catch-up)
    drops: int  # times a follower's buffer overflowed
    connects: int  # LISTEN connections made (1 + reconnects)


class _Follower:
    __slots__ = ("cursor", "live", "queue", "wake")

    def __init__(self, cursor: int) -> None:
        self.cursor = cursor
        self.live = True  # False: dropped to catch-up, reads from its cursor
        self.queue: deque[RunEvent] = deque()
        self.wake = asyncio.Event()


class _Feed:
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.followers: set[_Follower] = set()
        self.cursor = -1  # last seq handed to the live followers; -1 until the first read
        self.position = _Position()
        self.wake = asyncio.Event()
        self.stopped = False

    def ended(self, cursor: int) -> bool:
        return self.position.terminal and cursor >= self.position.last_seq


class EventHub:
    """Followers of runs' event logs, fed by one LISTEN connection (see the module's doc)."""

    def __init__(self, engine: Engine, *, buffer_size: int = 1024, poll_interval: float = 1.0):
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, not {buffer_size}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be positive, not {poll_interval}")
        self._engine = engine
        self.buffer_size = buffer_size
        self.poll_interval = poll_interval
        pool_size = getattr(engine.engine.pool, "size", lambda: 1)()
        self._slots = asyncio.Semaphore(max(1, int(pool_size)))
        self._feeds: dict[str, _Feed] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._listener_pid: int | None = None
        self._counts = {"reads": 0, "catch_up_reads": 0, "drops": 0, "connects": 0}

    # -- life ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start listening and polling (idempotent; `follow` starts the hub itself)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop or self._closed:
            return
        if self._loop is not None:
            raise RuntimeError("an EventHub serves the event loop it was started on")
        self._loop = loop
        self._spawn(self._listen_loop(), "agentrun-hub-listen")
        self._spawn(self._poll_loop(), "agentrun-hub-poll")

    async def close(self) -> None:
        """Stop listening; every follower ends (after the events it already holds)."""
        if self._closed:
            return
        self._closed = True
        for feed in self._feeds.values():
            feed.stopped = True
            for follower in feed.followers:
                follower.wake.set()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._feeds.clear()

    def stats(self) -> HubStats:
        followers = [f for feed in self._feeds.values() for f in feed.followers]
        return HubStats(
            listening=self._listener_pid is not None,
            listener_pid=self._listener_pid,
            runs=len(self._feeds),
            followers=len(followers),
            lagging=sum(1 for f in followers if not f.live),
            reads=self._counts["reads"],
            catch_up_reads=self._counts["catch_up_reads"],
            drops=self._counts["drops"],
            connects=self._counts["connects"],
        )

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- following -------------------------------------------------------------------------

    async def follow(
        self, run_id: str, after_seq: int = 0, *, until_terminal: bool = True
    ) -> AsyncGenerator[RunEvent, None]:
        """Every event of the run after `after_seq` in seq order, then new ones as they commit.

        Ends after the run's terminal status once its last event has been yielded (never, with
        until_terminal=False), or when the hub closes. An unknown run raises NotFoundError
        (a LookupError); with until_terminal=False it is waited for instead.
        """
        if after_seq < 0:
            raise ValueError(f"after_seq must be 0 or more, not {after_seq}")
        await self.start()
        if self._closed:
            return
        follower = _Follower(after_seq)
        feed = self._subscribe(run_id, follower)
        try:
            first, _ = await self._catch_up(feed, follower)
            if until_terminal and not feed.position.exists:
                raise NotFoundError(f"no run with id {run_id!r}")
            batch: list[RunEvent] | None = first
            while batch is not None:
                for event in batch:
                    if event.seq > follower.cursor:
                        follower.cursor = event.seq
                        yield event
                batch = await self._next_batch(feed, follower, until_terminal)
        finally:
            self._unsubscribe(feed, follower)

    async def _next_batch(
        self, feed: _Feed, follower: _Follower, until_terminal: bool
    ) -> list[RunEvent] | None:
        """The follower's next events in order, or None when it ends."""
        while not self._closed:
            follower.wake.clear()
            queue = follower.queue
            while queue and queue[0].seq <= follower.cursor:
                queue.popleft()
            if queue and queue[0].seq == follower.cursor + 1:
                return _contiguous(queue, follower.cursor)
            if queue or not follower.live or follower.cursor < feed.cursor:
                # A gap before the buffered events, a drop to catch-up, or a start behind
                # the feed: read from the follower's own cursor.
                events, full = await self._catch_up(feed, follower)
                if not follower.live and not full:
                    follower.live = True  # at the end: back on the live feed
                if events:
                    return events
                if queue:  # nothing in the database before it: the gap cannot be filled
                    return [queue.popleft()]
                # Nothing new yet: wait below (the feed or the poll wakes it).
            if until_terminal and feed.ended(follower.cursor):
                return None
            await follower.wake.wait()
        return None

    def _subscribe(self, run_id: str, follower: _Follower) -> _Feed:
        feed = self._feeds.get(run_id)
        if feed is None:
            feed = self._feeds[run_id] = _Feed(run_id)
            self._spawn(self._feed_loop(feed), f"agentrun-hub-feed-{run_id[:40]}")
        feed.followers.add(follower)
        return feed

    def _unsubscribe(self, feed: _Feed, follower: _Follower) -> None:
        feed.followers.discard(follower)
        follower.queue.clear()
        if not feed.followers:
            feed.stopped = True
            feed.wake.set()
            if self._feeds.get(feed.run_id) is feed:
                del self._feeds[feed.run_id]

    # -- reading ---------------------------------------------------------------------------

    async def _read(self, run_id: str, after: int, limit: int) -> tuple[_Position, list[RunEvent]]:
        async with self._slots, self._engine.engine.connect() as conn:
            rows = (
                await conn.execute(_READ, {"run_id": run_id, "after": after, "limit": limit})
            ).all()
        if not rows:
            return _Position(), []
        status, last_seq = rows[0][0], rows[0][1]
        events = [
            RunEvent(
                id=r.id,
                run_id=run_id,
                seq=r.seq,
                type=r.type,
                data=r.data,
                idempotency_key=r.idempotency_key,
                created_at=r.created_at,
            )
            for r in rows
            if r.seq is not None
        ]
        return _Position(True, status in _TERMINAL, int(last_seq)), events

    async def _catch_up(self, feed: _Feed, follower: _Follower) -> tuple[list[RunEvent], bool]:
        """A page of events after the follower's cursor; (events, whether the page was full)."""
        self._counts["catch_up_reads"] += 1
        position, events = await self._read(feed.run_id, follower.cursor, PAGE)
        feed.position = feed.position.merged(position)
        if feed.cursor < 0:
            # The feed's first position: everything after it is read by the feed, for all.
            feed.cursor = position.last_seq
            feed.wake.set()
        return [e for e in events if e.seq > follower.cursor], len(events) == PAGE

    async def _feed_loop(self, feed: _Feed) -> None:
        backoff = _BACKOFF_FIRST
        while not feed.stopped:
            await feed.wake.wait()
            feed.wake.clear()
            if feed.stopped or feed.cursor < 0:
                continue
            try:
                self._counts["reads"] += 1
                position, events = await self._read(feed.run_id, feed.cursor, PAGE)
            except _DB_ERRORS as exc:
                log.warning("event hub: reading run %s failed (%s); retrying", feed.run_id, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                feed.wake.set()
                continue
            backoff = _BACKOFF_FIRST
            self._deliver(feed, position, events)
            if len(events) == PAGE:
                feed.wake.set()

    def _deliver(self, feed: _Feed, position: _Position, events: list[RunEvent]) -> None:
        feed.position = feed.position.merged(position)
        events = [e for e in events if e.seq > feed.cursor]
        if events:
            feed.cursor = events[-1].seq
        for follower in feed.followers:
            if events and follower.live:
                if len(follower.queue) + len(events) > self.buffer_size:
                    # Too slow for the live feed: it reads from its cursor until it is back.
                    follower.queue.clear()
                    follower.live = False
                    self._counts["drops"] += 1
                else:
                    follower.queue.extend(events)
            follower.wake.set()

    # -- waking: LISTEN, and the poll fallback ---------------------------------------------

    def _wake(self, payload: str) -> None:
        run_id, _, seq = payload.rpartition(":")
        feed = self._feeds.get(run_id)
        if feed is None:
            return
        with contextlib.suppress(ValueError):
            if int(seq) <= feed.cursor:
                return  # already read (coalesced into an earlier read)
        feed.wake.set()

    def _wake_all(self, feeds: Iterable[_Feed] | None = None) -> None:
        for feed in list(self._feeds.values()) if feeds is None else feeds:
            feed.wake.set()

    async def _listen_loop(self) -> None:
        backoff = _BACKOFF_FIRST
        while not self._closed:
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._engine.libpq_url,
                    autocommit=True,
                    application_name=LISTEN_APPLICATION_NAME,
                )
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                self._listener_pid = conn.info.backend_pid
                self._counts["connects"] += 1
                backoff = _BACKOFF_FIRST
                # Whatever was committed while nobody listened: every feed re-reads.
                self._wake_all()
                while True:
                    async for note in conn.notifies(timeout=_KEEPALIVE):
                        self._wake(note.payload)
                    await asyncio.wait_for(conn.execute("SELECT 1"), _KEEPALIVE)
            except (*_DB_ERRORS, TimeoutError) as exc:
                log.warning("event hub: LISTEN connection lost (%s); reconnecting", exc)
            finally:
                self._listener_pid = None
                if conn is not None:
                    with contextlib.suppress(*_DB_ERRORS):
                        await conn.close()
            # Polling covers the outage; the next connection wakes every feed again.
            self._wake_all()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _poll_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.poll_interval)
            feeds = [f for f in self._feeds.values() if f.cursor >= 0]
            try:
                await self._poll(feeds)
            except _DB_ERRORS as exc:
                log.warning("event hub: polling failed (%s)", exc)

    async def _poll(self, feeds: list[_Feed]) -> None:
        """One query over the followed runs; wake the feeds whose run moved."""
        for start in range(0, len(feeds), 1000):
            chunk = {f.run_id: f for f in feeds[start : start + 1000]}
            async with self._slots, self._engine.engine.connect() as conn:
                rows = (await conn.execute(_POSITIONS, {"ids": list(chunk)})).all()
            for run_id, status, last_seq in rows:
                feed = chunk[run_id]
                moved = last_seq > feed.cursor or not feed.position.exists
                if moved or (status in _TERMINAL and not feed.position.terminal):
                    feed.wake.set()


def _contiguous(queue: deque[RunEvent], cursor: int) -> list[RunEvent]:
    """The buffered events that follow the cursor without a gap, taken off the buffer."""
    out: list[RunEvent] = []
    while queue and queue[0].seq == cursor + 1:
        event = queue.popleft()
        cursor = event.seq
        out.append(event)
    return out
