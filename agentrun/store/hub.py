"""The event hub: one LISTEN connection per process fans a run's events out to its followers.

Every follower of a process goes through one `EventHub`:

- One psycopg connection LISTENs on NOTIFY_CHANNEL (payloads "<run_id>:<seq>") and marks the
  *feed* of that run dirty. A few reader tasks read the new events of the dirty runs, each run
  ONCE for all its followers and many runs in one query, through the Engine's pool (at most
  `pool_size` queries at a time, so a process holds pool + 1 connections however many follow).
  A run is never read by two readers at once: notifications that arrive while its read is in
  flight mark it dirty once, and are coalesced into its next read.
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
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from agentrun.db.models import RunEvent
from agentrun.protocol.names import NOTIFY_CHANNEL
from agentrun.store.engine import Engine, NotFoundError
from agentrun.store.hub_reads import Page, Position, read_positions, read_runs

log = logging.getLogger(__name__)

LISTEN_APPLICATION_NAME = "agentrun-hub"
PAGE = 500  # events a run per read
BATCH = 100  # runs per query
_DB_ERRORS = (SQLAlchemyError, psycopg.Error, OSError)
_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 5.0
_KEEPALIVE = 30.0  # seconds without a notification before the listener checks its connection


@dataclass(frozen=True)
class HubStats:
    """What the hub is doing, for tests, benchmarks and health checks."""

    listening: bool
    listener_pid: int | None
    runs: int
    followers: int
    lagging: int  # followers catching up from the database
    reads: int  # run reads since start (one per wake-up of a run, for all its followers)
    queries: int  # the queries that made them (many runs a query)
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
        self.position = Position()
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
        self._readers = max(1, min(4, int(pool_size) - 1))
        # Followers catching up never take the readers' connections: a storm of (re)starting
        # followers does not hold up the live feed.
        self._catch_up_slots = asyncio.Semaphore(max(1, int(pool_size) - self._readers))
        self._feeds: dict[str, _Feed] = {}
        self._dirty: dict[str, _Feed] = {}  # runs to read, in the order they were marked
        self._inflight: set[str] = set()
        self._kick = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._listener_pid: int | None = None
        self._counts = {"reads": 0, "queries": 0, "catch_up_reads": 0, "drops": 0, "connects": 0}

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
        for n in range(self._readers):
            self._spawn(self._reader(), f"agentrun-hub-reader-{n}")

    def wake_all(self) -> None:  # every follower looks again (at its `stop`, say)
        for feed in self._feeds.values():
            for follower in feed.followers:
                follower.wake.set()

    async def close(self) -> None:
        """Stop listening; every follower ends (after the events it already holds)."""
        if self._closed:
            return
        self._closed = True
        for feed in self._feeds.values():
            feed.stopped = True
            for follower in feed.followers:
                follower.wake.set()
        self._dirty.clear()
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
            queries=self._counts["queries"],
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
        self,
        run_id: str,
        after_seq: int = 0,
        *,
        until_terminal: bool = True,
        stop: asyncio.Event | None = None,
    ) -> AsyncGenerator[RunEvent, None]:
        """Every event of the run after `after_seq` in seq order, then new ones as they commit.

        Ends after the run's terminal status once its last event is yielded (never, with
        until_terminal=False), when the hub closes, or once `stop` is set (and `wake_all`
        called). An unknown run raises NotFoundError (waited for with until_terminal=False). A
        database error on the first read is raised; later ones are retried from the cursor.
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
                batch = await self._next_batch(feed, follower, until_terminal, stop)
        finally:
            self._unsubscribe(feed, follower)

    async def _next_batch(
        self, feed: _Feed, follower: _Follower, until_terminal: bool, stop: asyncio.Event | None
    ) -> list[RunEvent] | None:
        """The follower's next events in order, or None when it ends."""
        while not self._closed and not (stop is not None and stop.is_set()):
            follower.wake.clear()
            queue = follower.queue
            while queue and queue[0].seq <= follower.cursor:
                queue.popleft()
            if queue and queue[0].seq == follower.cursor + 1:
                return _contiguous(queue, follower.cursor)
            if queue or not follower.live or follower.cursor < feed.cursor:
                # A gap before the buffered events, a drop to catch-up, or a start behind
                # the feed: read from the follower's own cursor.
                try:
                    events, full = await self._catch_up(feed, follower)
                except _DB_ERRORS as exc:  # the database is away: try again from the cursor
                    log.warning("event hub: catching up on %s failed (%r)", feed.run_id, exc)
                    await asyncio.sleep(min(self.poll_interval, _BACKOFF_MAX))
                    continue
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
        feed.followers.add(follower)
        return feed

    def _unsubscribe(self, feed: _Feed, follower: _Follower) -> None:
        feed.followers.discard(follower)
        follower.queue.clear()
        if not feed.followers:
            feed.stopped = True
            if self._feeds.get(feed.run_id) is feed:
                del self._feeds[feed.run_id]
            if self._dirty.get(feed.run_id) is feed:
                del self._dirty[feed.run_id]

    # -- reading ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        """A pool connection for a plain read (autocommit: no BEGIN, no ROLLBACK), at most
        pool_size at a time."""
        async with self._slots, self._engine.engine.connect() as conn:
            yield await conn.execution_options(isolation_level="AUTOCOMMIT")

    async def _read(self, cursors: dict[str, int]) -> dict[str, Page]:
        async with self._connection() as conn:
            got = await read_runs(conn, cursors, PAGE)
        self._counts["queries"] += 1
        return got

    async def _catch_up(self, feed: _Feed, follower: _Follower) -> tuple[list[RunEvent], bool]:
        """A page of events after the follower's cursor; (events, whether the page was full)."""
        self._counts["catch_up_reads"] += 1
        async with self._catch_up_slots:
            got = await self._read({feed.run_id: follower.cursor})
        position, events = got.get(feed.run_id, (Position(), []))
        feed.position = feed.position.merged(position)
        if feed.cursor < 0:
            # The feed's first position: everything after it is read by the feed, for all.
            feed.cursor = position.last_seq
            self._mark(feed)
        return [e for e in events if e.seq > follower.cursor], len(events) == PAGE

    def _mark(self, feed: _Feed) -> None:
        """The run has (or may have) new events: read them soon, once for all followers."""
        if feed.stopped or feed.cursor < 0:
            return  # an unprimed feed is marked when its first follower primes it
        self._dirty[feed.run_id] = feed
        self._kick.set()

    def _take(self) -> list[_Feed]:
        """Up to BATCH dirty runs that no reader is reading, now in flight."""
        batch: list[_Feed] = []
        for run_id in list(self._dirty):
            if run_id in self._inflight:
                continue
            feed = self._dirty.pop(run_id)
            self._inflight.add(run_id)
            batch.append(feed)
            if len(batch) == BATCH:
                break
        return batch

    async def _reader(self) -> None:
        backoff = _BACKOFF_FIRST
        while not self._closed:
            await self._kick.wait()
            batch = self._take()
            if not batch:
                self._kick.clear()
                continue
            try:
                # One connection while there is work: under load, no checkout a query.
                async with self._connection() as conn:
                    while batch:
                        await self._read_batch(conn, batch)
                        batch = self._take()
                backoff = _BACKOFF_FIRST
            except Exception as exc:  # a reader never dies: the runs are read again
                log.warning("event hub: reading runs failed (%r); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _read_batch(self, conn: AsyncConnection, batch: list[_Feed]) -> None:
        """Read the runs of the batch (in flight) and hand their new events to the followers."""
        try:
            got = await read_runs(conn, {f.run_id: f.cursor for f in batch}, PAGE)
        except BaseException:
            self._inflight.difference_update(f.run_id for f in batch)
            for feed in batch:
                self._mark(feed)  # read again, by whichever reader is next
            raise
        self._inflight.difference_update(f.run_id for f in batch)
        self._counts["queries"] += 1
        self._counts["reads"] += len(batch)
        for feed in batch:
            position, events = got.get(feed.run_id, (Position(), []))
            self._deliver(feed, position, events)
            if len(events) == PAGE:
                self._mark(feed)  # more to read
        if any(run_id not in self._inflight for run_id in self._dirty):
            self._kick.set()  # marked again while in flight

    def _deliver(self, feed: _Feed, position: Position, events: list[RunEvent]) -> None:
        feed.position = feed.position.merged(position)
        events = [e for e in events if e.seq > feed.cursor]
        if events:
            feed.cursor = events[-1].seq
        for follower in feed.followers:
            if events and follower.live:
                fresh = events
                if events[0].seq <= follower.cursor:  # it read ahead of the feed (catch-up)
                    fresh = [e for e in events if e.seq > follower.cursor]
                if len(follower.queue) + len(fresh) > self.buffer_size:
                    # Too slow for the live feed: it reads from its cursor until it is back.
                    follower.queue.clear()
                    follower.live = False
                    self._counts["drops"] += 1
                else:
                    follower.queue.extend(fresh)
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
        self._mark(feed)

    def _wake_all(self) -> None:
        for feed in list(self._feeds.values()):
            self._mark(feed)

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
            except Exception as exc:  # the listener never dies: it reconnects
                log.warning("event hub: LISTEN connection lost (%r); reconnecting", exc)
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
            except Exception as exc:  # the next poll tries again
                log.warning("event hub: polling failed (%r)", exc)

    async def _poll(self, feeds: list[_Feed]) -> None:
        """One query over the followed runs; wake the feeds whose run moved."""
        for start in range(0, len(feeds), 1000):
            chunk = {f.run_id: f for f in feeds[start : start + 1000]}
            async with self._connection() as conn:
                positions = await read_positions(conn, chunk)
            for run_id, position in positions.items():
                feed = chunk[run_id]
                moved = position.last_seq > feed.cursor or not feed.position.exists
                if moved or (position.terminal and not feed.position.terminal):
                    self._mark(feed)


def _contiguous(queue: deque[RunEvent], cursor: int) -> list[RunEvent]:
    """The buffered events that follow the cursor without a gap, taken off the buffer."""
    out: list[RunEvent] = []
    while queue and queue[0].seq == cursor + 1:
        event = queue.popleft()
        cursor = event.seq
        out.append(event)
    return out
