"""N worker processes on one machine, started and stopped together (`agentrun worker
--processes N`).

One Python process runs its workflow tasks and activities on one event loop under one GIL, so a
worker uses about one core however many the machine has. Each child here is a full worker (its
own Temporal client, database pool and event loop); they poll the same task queue.

- Started together: a child reports that it polls with one JSON line on stdout
  ({"event": "polling", ...}, as `agentrun worker --json` prints); the group is ready once
  every child has.
- Stopped together: `stop` (the parent's SIGTERM or Ctrl-C) sends SIGTERM to every child once
  and waits for them to finish their in-flight work (bounded, then SIGKILL).
- A child that ends on its own (a crash, a lost server it gave up on) is reported on stderr with
  its exit code and the others are stopped: the group exits 1 and whatever supervises it
  (systemd, compose, Kubernetes) restarts it whole, rather than this process restarting a child
  that may keep dying.
- The children run in their own session, so a terminal's Ctrl-C reaches them only through the
  parent (one SIGTERM each); on Linux a child also gets SIGTERM if the parent is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("agentrun.worker")

# How long a child may take to stop after SIGTERM before it is killed: the worker's own graceful
# shutdown (30 s for running activities) plus its Temporal and database teardown.
STOP_GRACE_S = 60.0


class ChildFailed(RuntimeError):
    """A child ended on its own (or could not start)."""


@dataclass
class _Child:
    index: int
    proc: asyncio.subprocess.Process
    polling: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return f"worker process {self.index} (pid {self.proc.pid})"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM this process when its parent dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


async def _spawn(index: int, command: Sequence[str], env: Mapping[str, str] | None) -> _Child:
    proc = await asyncio.create_subprocess_exec(
        *command,
        env=dict(env) if env is not None else None,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=None,  # the child's logs go where ours go
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    return _Child(index, proc)


async def _read_stdout(child: _Child) -> None:
    """Mark the child polling on its polling line; other lines (its "stopped") are dropped."""
    assert child.proc.stdout is not None
    async for raw in child.proc.stdout:
        with contextlib.suppress(ValueError):
            record = json.loads(raw)
            if isinstance(record, dict) and record.get("event") == "polling":
                child.polling.set()


async def supervise(
    commands: Sequence[Sequence[str]],
    stop: asyncio.Event,
    *,
    env: Mapping[str, str] | None = None,
    on_polling: Callable[[list[int]], None] | None = None,
    stop_grace_s: float = STOP_GRACE_S,
) -> None:
    """Run one child per command until `stop` is set, then stop them all. `on_polling` is
    called with the children's pids once every one of them polls. Raises ChildFailed if a
    child ends before `stop` (the others are stopped first) or does not stop cleanly."""
    children = [await _spawn(i + 1, cmd, env) for i, cmd in enumerate(commands)]
    readers = [asyncio.create_task(_read_stdout(c)) for c in children]
    exits: dict[asyncio.Future[Any], _Child] = {
        asyncio.create_task(c.proc.wait()): c for c in children
    }
    stopping = asyncio.create_task(stop.wait())
    try:
        await _until_ready_or_stop(children, exits, stopping, on_polling)
        waiting: list[asyncio.Future[Any]] = [*exits, stopping]
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if stopping not in done:
            ended = next(exits[t] for t in done)
            raise ChildFailed(
                f"{ended.name} exited with code {ended.proc.returncode}; stopping the others"
            )
    finally:
        stopping.cancel()
        await _stop_all(children, stop_grace_s)
        for reader in readers:
            reader.cancel()
    failed = [c for c in children if c.proc.returncode != 0]
    if failed:
        raise ChildFailed(
            "; ".join(f"{c.name} stopped with code {c.proc.returncode}" for c in failed)
        )


async def _until_ready_or_stop(
    children: list[_Child],
    exits: dict[asyncio.Future[Any], _Child],
    stopping: asyncio.Task[bool],
    on_polling: Callable[[list[int]], None] | None,
) -> None:
    ready: asyncio.Future[list[bool]] = asyncio.gather(*(c.polling.wait() for c in children))
    try:
        waiting: list[asyncio.Future[Any]] = [ready, stopping, *exits]
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ready.cancel()
    if ready in done and on_polling is not None:
        on_polling([c.proc.pid for c in children])
    elif stopping not in done and ready not in done:
        ended = next(exits[t] for t in done if t in exits)
        raise ChildFailed(
            f"{ended.name} exited with code {ended.proc.returncode} before it polled; "
            "stopping the others"
        )


async def _stop_all(children: list[_Child], grace_s: float) -> None:
    for c in children:
        if c.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                c.proc.send_signal(signal.SIGTERM)
    waits = [asyncio.create_task(c.proc.wait()) for c in children]
    _, pending = await asyncio.wait(waits, timeout=grace_s)
    if pending:
        for c in children:
            if c.proc.returncode is None:
                log.error("%s did not stop within %.0f s: killing it", c.name, grace_s)
                with contextlib.suppress(ProcessLookupError):
                    c.proc.kill()
        await asyncio.gather(*pending)
