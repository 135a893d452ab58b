"""A model attempt's heartbeats: sent every second from a background task for the whole attempt,
so a cancel (which rides on a heartbeat's answer) reaches the attempt within about a second, even
before the first token; and carrying to the next attempt the attempts that failed on the database
before they called the model (the database cannot record those itself)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity

HEARTBEAT_EVERY_S = 1.0


@dataclass
class Beat:
    """What this attempt's heartbeats carry (the next attempt reads the last of them)."""

    db_only: list[int] = field(default_factory=list)
    model_called: bool = False

    def send(self) -> None:
        activity.heartbeat({"db_only_attempts": self.db_only})


_CURRENT: ContextVar[Beat | None] = ContextVar("agentrun_model_beat", default=None)


def db_only_attempts(details: Sequence[Any]) -> list[int]:
    # Tolerant: details from another version of this activity, or none, mean none.
    last = details[-1] if details else None
    attempts = last.get("db_only_attempts") if isinstance(last, dict) else None
    if not isinstance(attempts, list):
        return []
    return [a for a in attempts if isinstance(a, int)]


def heartbeat() -> None:
    beat = _CURRENT.get()
    if beat is not None:
        beat.send()
    else:
        activity.heartbeat()


async def _heartbeat_forever() -> None:
    while True:
        heartbeat()
        await asyncio.sleep(HEARTBEAT_EVERY_S)


@contextlib.asynccontextmanager
async def beating(beat: Beat) -> AsyncIterator[None]:
    """Heartbeat with `beat`'s details until the block ends."""
    token = _CURRENT.set(beat)
    beater = asyncio.create_task(_heartbeat_forever())
    try:
        yield
    finally:
        beater.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beater
        _CURRENT.reset(token)
