"""Reading one streamed chat completion: the chunks into text and tool calls, the text into
coalesced message.delta events, the waits timed (first token, then stalls between chunks)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from activities.model_errors import IncompleteStreamError, StallError
from agentrun.contracts import ToolCallRequest, storable_text


class DeltaWriter:
    """Coalesces streamed text into message.delta events.

    The first delta after a quiet spell is written at once; after that at most one commit per
    flush interval, from a background task so the stream is never held up by the database.
    """

    def __init__(self, write: Callable[[str], Awaitable[None]], interval_s: float) -> None:
        self._write = write
        self._interval = interval_s
        self._buffer: list[str] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._closed = asyncio.Event()
        self._last_flush = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self.commits = 0

    def add(self, text: str) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        elif self._task.done():
            self._task.result()  # a failed write surfaces here and fails the attempt
        self._buffer.append(text)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._closing:
                delay = self._last_flush + self._interval - time.monotonic()
                if delay > 0:
                    # Sleep out the interval, but wake early when the stream ends.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._closed.wait(), delay)
            if self._buffer:
                text = "".join(self._buffer)
                self._buffer.clear()
                self._last_flush = time.monotonic()
                await self._write(text)
                self.commits += 1
            if self._closing and not self._buffer:
                return

    async def close(self) -> None:
        """Write what is buffered and stop."""
        self._closing = True
        self._closed.set()
        self._wake.set()
        if self._task is not None:
            await self._task


@dataclass
class StreamedTurn:
    """What one model attempt streamed so far."""

    started: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    text_parts: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None
    response_id: str | None = None
    response_model: str | None = None
    usage: Any = None

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def tool_calls(self) -> list[ToolCallRequest]:
        """The calls as recorded: kept as sent, except what PostgreSQL cannot store (a NUL, a
        lone surrogate): a write it refuses would fail the turn on every attempt."""
        return [
            ToolCallRequest(
                id=storable_text(c["id"]),
                name=storable_text(c["name"]),
                arguments=storable_text("".join(c["arguments"])),
            )
            for _, c in sorted(self.calls.items())
        ]

    def ms_since_start(self, at: float | None = None) -> int | None:
        if at is None:
            return None
        return int((at - self.started) * 1000)

    def take(self, chunk: Any, writer: DeltaWriter) -> None:
        """One chunk: its text to the writer, its tool-call pieces, finish reason and usage."""
        self.response_id = self.response_id or chunk.id
        self.response_model = self.response_model or getattr(chunk, "model", None)
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            if delta is not None and delta.content:
                self._first_token()
                content = storable_text(delta.content)
                self.text_parts.append(content)
                writer.add(content)
            for tc in (delta.tool_calls if delta is not None else None) or []:
                self._first_token()
                slot = self.calls.setdefault(tc.index, {"id": "", "name": "", "arguments": []})
                if tc.id:
                    slot["id"] = tc.id
                if tc.function is not None:
                    if tc.function.name:
                        slot["name"] = tc.function.name
                    if tc.function.arguments:
                        slot["arguments"].append(tc.function.arguments)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason

    def _first_token(self) -> None:
        if self.first_token is None:
            self.first_token = time.monotonic()


async def read_stream(
    stream: Any, turn: StreamedTurn, writer: DeltaWriter, *, first_wait: float, stall: float
) -> None:
    """Every chunk of `stream` into `turn`. Until the first chunk the first-token timeout
    applies (a reasoning model may think for minutes while the connection is alive), after it
    the stall timeout between chunks; either raises StallError, and a stream that ends without
    a finish reason raises IncompleteStreamError."""
    chunks = stream.__aiter__()
    got_chunk = False
    while True:
        wait = stall if got_chunk else first_wait - (time.monotonic() - turn.started)
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that
            # lands as a chunk arrives (chunks arrive all the time), and the stream of a
            # cancelled run would be read to its end and recorded.
            async with asyncio.timeout(max(wait, 0.001)):
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise StallError(
                f"model stream stalled: no chunk for {stall:g}s"
                if got_chunk
                else f"the model sent no first token within {first_wait:g}s"
            ) from None
        got_chunk = True
        turn.take(chunk, writer)
    if turn.finish_reason is None:
        raise IncompleteStreamError("the stream ended before a finish reason was sent")
