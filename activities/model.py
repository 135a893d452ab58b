"""The model-turn activity: stream one turn from an OpenAI-compatible endpoint into the event
log, then record it.

The openai client's own retries are off (max_retries=0): Temporal retries the activity, so
every attempt is visible, recorded in llm_calls, and retried after what Retry-After asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import openai
import psycopg
import sqlalchemy.exc
from openai import AsyncOpenAI
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.context import load_context
from activities.tools import ToolRegistry
from agentrun.contracts import (
    AgentConfig,
    ModelTurnInput,
    ModelTurnResult,
    ToolCallRequest,
    Usage,
    preview,
    storable_text,
)
from agentrun.protocol.events import ErrorData, EventType, MessageDeltaData, StreamResetData
from agentrun.protocol.statuses import LlmCallStatus
from agentrun.settings import Settings
from agentrun.store import LlmCallValues, Repository, event_key

NON_RETRYABLE_STATUSES = frozenset({400, 401, 403, 404, 422})
RETRYABLE_STATUSES = frozenset({408, 409, 429})
MAX_RETRY_AFTER_S = 600.0
# A background task heartbeats this often for the whole attempt, so a cancel (which rides on
# a heartbeat's answer) reaches the attempt within about a second, even before the first token.
HEARTBEAT_EVERY_S = 1.0
CONFIG_CACHE_RUNS = 1024
T = TypeVar("T")


class IncompleteStreamError(Exception):
    """The stream ended without a finish reason: a truncated response."""


class StallError(Exception):
    """No chunk within the first-token timeout, or between two chunks within the stall one."""


class DatabaseUnavailableError(Exception):
    """The database stayed unreachable for the worker's whole AGENTRUN_DB_RETRY_S."""


def is_transient_db_error(exc: BaseException) -> bool:
    """A lost or refused connection, a server shutting down: worth waiting out. Data errors
    (a value the database refuses) and programming errors are not."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig if exc.orig is not None else exc
        if isinstance(exc, sqlalchemy.exc.DBAPIError):
            return isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError)
    return isinstance(
        exc,
        psycopg.OperationalError
        | psycopg.InterfaceError
        | sqlalchemy.exc.TimeoutError
        | ConnectionError,
    )


def _db_error_text(exc: BaseException) -> str:
    # The driver's own message, first line only: SQLAlchemy's text carries the statement and
    # its bound parameters (conversation text), which must not reach Temporal or the logs.
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [""])[0]
    return f"{type(orig).__name__}: {first[:300]}"


def retry_after_seconds(headers: Any) -> float | None:
    """Retry-After in seconds, from retry-after-ms or Retry-After (seconds or an HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        with contextlib.suppress(ValueError):
            return max(0.0, float(ms) / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def _provider_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return exc.message


def _is_context_length(exc: openai.APIStatusError) -> bool:
    body = exc.body if isinstance(exc.body, dict) else {}
    err = body.get("error", body) if isinstance(body, dict) else {}
    code = err.get("code") if isinstance(err, dict) else None
    text = _provider_message(exc).lower()
    return code == "context_length_exceeded" or "context length" in text or "context_length" in text


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


class ModelActivities:
    def __init__(
        self,
        repo: Repository,
        settings: Settings,
        registry: ToolRegistry,
        client: AsyncOpenAI | None = None,
    ) -> None:
        self.repo = repo
        self.settings = settings
        self.registry = registry
        self._client = client
        self._configs: OrderedDict[str, AgentConfig] = OrderedDict()

    def client(self) -> AsyncOpenAI:
        if self._client is None:
            key = self.settings.openai_api_key
            self._client = AsyncOpenAI(
                base_url=self.settings.openai_base_url,
                api_key=key.get_secret_value() if key else "offline",
                max_retries=0,
            )
        return self._client

    async def _db(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run a database call, waiting out a lost database (heartbeating, backing off) for up
        to AGENTRUN_DB_RETRY_S, so an outage neither fails the turn nor spends its model
        attempts."""
        deadline: float | None = None
        delay = 0.2
        while True:
            try:
                return await call()
            except Exception as exc:
                if not is_transient_db_error(exc):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.settings.db_retry_s
                    activity.logger.warning(
                        "database unavailable (%s) while trying to %s; retrying for up to %gs",
                        _db_error_text(exc),
                        what,
                        self.settings.db_retry_s,
                    )
                if now >= deadline:
                    raise DatabaseUnavailableError(
                        f"the database was unavailable for {self.settings.db_retry_s:g}s while "
                        f"trying to {what}: {_db_error_text(exc)}"
                    ) from None
                _heartbeat()
                await asyncio.sleep(min(delay, max(0.0, deadline - now)))
                delay = min(delay * 2, 5.0)

    async def _config(self, inp: ModelTurnInput) -> AgentConfig:
        # Activity tasks scheduled before the config moved to the run row still carry it.
        if inp.config is not None:
            return inp.config
        cached = self._configs.get(inp.run_id)
        if cached is not None:
            self._configs.move_to_end(inp.run_id)
            return cached
        run = await self._db("read the run's config", lambda: self.repo.get_run(inp.run_id))
        # Tolerant: a field this worker does not know (written by a newer one) is left out.
        known = {k: v for k, v in (run.config or {}).items() if k in AgentConfig.model_fields}
        config = AgentConfig.model_validate(known)
        self._configs[inp.run_id] = config
        while len(self._configs) > CONFIG_CACHE_RUNS:
            self._configs.popitem(last=False)
        return config

    @activity.defn(name="agentrun.model_turn")
    async def model_turn(self, inp: ModelTurnInput) -> ModelTurnResult:
        # Heartbeat details carry, from attempt to attempt, the attempts that failed on the
        # database before they called the model: the database cannot record them itself.
        beat = _Beat(db_only=_db_only_attempts(activity.info().heartbeat_details))
        token = _BEAT.set(beat)
        beater = asyncio.create_task(_heartbeat_forever())
        try:
            return await self._model_turn(inp, beat)
        except DatabaseUnavailableError as exc:
            if not beat.model_called:
                beat.db_only.append(activity.info().attempt)
                beat.send()
            # Retryable; when the model was not called it spends none of the model budget.
            raise ApplicationError(str(exc), type="DatabaseUnavailable") from None
        except sqlalchemy.exc.DBAPIError as exc:
            # Lost connections were waited out above; what is left is a value or a statement
            # the database refuses, which no retry changes. The driver's message only: the
            # statement's parameters (conversation text) stay out of Temporal and the logs.
            raise ApplicationError(
                f"the database refused a write of model turn {inp.turn}: {_db_error_text(exc)}",
                type="DatabaseRefused",
                non_retryable=True,
            ) from None
        finally:
            beater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beater
            _BEAT.reset(token)

    async def _model_turn(self, inp: ModelTurnInput, beat: _Beat) -> ModelTurnResult:
        info = activity.info()
        attempt = info.attempt
        recorded = await self._db(
            "look up the turn", lambda: self.repo.find_turn(inp.run_id, inp.turn)
        )
        if recorded is not None:
            message, call = recorded
            return _result(inp.turn, message.content or "", message.tool_calls or [], call, True)
        config = await self._config(inp)
        await self._db(
            "mark lost attempts",
            lambda: self.repo.mark_lost_attempts(
                inp.run_id, inp.turn, attempt, inp.model, not_lost=beat.db_only
            ),
        )
        # The model budget is counted in the database: attempts that failed on the database
        # before they reached the model do not spend it.
        spent = await self._db(
            "count model attempts", lambda: self.repo.model_attempts(inp.run_id, inp.turn)
        )
        if len(spent) >= config.model_max_attempts:
            last = spent[-1].error or spent[-1].status
            raise ApplicationError(
                f"model turn {inp.turn} gave up after {len(spent)} attempts; the last: {last}",
                type="ModelAttemptsExhausted",
                non_retryable=True,
            )
        if attempt > 1:
            await self._db(
                "write stream.reset",
                lambda: self.repo.append_event(
                    inp.run_id,
                    StreamResetData(turn=inp.turn, attempt=attempt),
                    key=event_key(EventType.STREAM_RESET, inp.turn, attempt),
                ),
            )
        messages = await self._db(
            "read the context",
            lambda: load_context(
                self.repo,
                config.system_prompt,
                inp.session_id,
                inp.run_id,
                config.context_token_budget,
            ),
        )
        tools = self._tool_schemas(inp, config)
        beat.model_called = True
        return await self._stream_turn(inp, config, attempt, len(spent), messages, tools)

    def _tool_schemas(self, inp: ModelTurnInput, config: AgentConfig) -> list[dict[str, Any]]:
        client = {c.name: c for c in config.client_tools}
        schemas = []
        for name in inp.tools:
            if name in client:
                c = client[name]
                schemas.append(
                    {
                        "type": "function",
                        "function": {
                            "name": c.name,
                            "description": c.description,
                            "parameters": c.parameters,
                        },
                    }
                )
            else:
                schemas.extend(t.openai_schema() for t in self.registry.select([name]))
        return schemas

    async def _stream_turn(
        self,
        inp: ModelTurnInput,
        config: AgentConfig,
        attempt: int,
        spent: int,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
    ) -> ModelTurnResult:
        async def write_delta(text: str) -> None:
            await self._db(
                "write a delta",
                lambda: self.repo.append_stream_event(
                    inp.run_id, MessageDeltaData(turn=inp.turn, attempt=attempt, text=text)
                ),
            )

        writer = DeltaWriter(write_delta, config.flush_interval_ms / 1000)
        started = time.monotonic()
        first_token: float | None = None
        text_parts: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        finish_reason: str | None = None
        response_id: str | None = None
        usage: Any = None
        kwargs: dict[str, Any] = {}
        if tools:
            kwargs["tools"] = tools
        if config.temperature is not None:
            kwargs["temperature"] = config.temperature
        if config.max_output_tokens is not None:
            kwargs["max_tokens"] = config.max_output_tokens
        stall = config.model_heartbeat_timeout_s
        first_wait = config.first_token_timeout_s
        stream: Any = None
        try:
            # The SDK's overloads cannot see through **kwargs; the call is the documented one.
            create: Any = self.client().chat.completions.create
            # Waits are timed here, not by the HTTP client: until the first chunk the
            # first-token timeout applies (a reasoning model may think for minutes while the
            # connection is alive), after it the stall timeout between chunks. The HTTP read
            # timeout is only a backstop behind both.
            stream = await asyncio.wait_for(
                create(
                    model=inp.model,
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},
                    timeout=openai.Timeout(
                        config.model_timeout_s, read=max(first_wait, stall) + 5, connect=10
                    ),
                    **kwargs,
                ),
                first_wait,
            )
            chunks = stream.__aiter__()
            got_chunk = False
            while True:
                wait = stall if got_chunk else first_wait - (time.monotonic() - started)
                try:
                    chunk = await asyncio.wait_for(chunks.__anext__(), max(wait, 0.001))
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise StallError(
                        f"model stream stalled: no chunk for {stall:g}s"
                        if got_chunk
                        else f"the model sent no first token within {first_wait:g}s"
                    ) from None
                got_chunk = True
                response_id = response_id or chunk.id
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    delta = choice.delta
                    if delta is not None and delta.content:
                        if first_token is None:
                            first_token = time.monotonic()
                        content = storable_text(delta.content)
                        text_parts.append(content)
                        writer.add(content)
                    for tc in (delta.tool_calls if delta is not None else None) or []:
                        if first_token is None:
                            first_token = time.monotonic()
                        slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": []})
                        if tc.id:
                            slot["id"] = tc.id
                        if tc.function is not None:
                            if tc.function.name:
                                slot["name"] = tc.function.name
                            if tc.function.arguments:
                                slot["arguments"].append(tc.function.arguments)
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
            if finish_reason is None:
                raise IncompleteStreamError("the stream ended before a finish reason was sent")
            await writer.close()
        except asyncio.CancelledError:
            # Cancelled (the run was cancelled, or the worker is shutting down): keep what
            # streamed so far in the event log, then let the cancellation through.
            with contextlib.suppress(Exception):
                await asyncio.shield(writer.close())
            raise
        except DatabaseUnavailableError:
            with contextlib.suppress(Exception):
                await writer.close()
            raise
        except Exception as exc:
            # Whatever streamed before the failure stays in the event log.
            with contextlib.suppress(Exception):
                await writer.close()
            raise await self._failed(
                inp, attempt, spent + 1, config, started, first_token, exc
            ) from exc
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(stream.close())

        latency_ms = int((time.monotonic() - started) * 1000)
        # What the model sent is kept as sent, except what PostgreSQL cannot store (a NUL, a
        # lone surrogate): a write it refuses would fail the turn on every attempt.
        tool_calls = [
            ToolCallRequest(
                id=storable_text(c["id"]),
                name=storable_text(c["name"]),
                arguments=storable_text("".join(c["arguments"])),
            )
            for _, c in sorted(calls.items())
        ]
        if not tools:
            # Tools were off for this turn; a call the model makes anyway cannot be answered.
            tool_calls = []
        text = "".join(text_parts)
        call_values = LlmCallValues(
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
            latency_ms=latency_ms,
            time_to_first_token_ms=int((first_token - started) * 1000) if first_token else None,
            response_id=response_id,
            finish_reason=finish_reason,
            http_status=200,
        )
        message, call, _ = await self._db(
            "record the turn",
            lambda: self.repo.record_model_turn(
                run_id=inp.run_id,
                session_id=inp.session_id,
                turn=inp.turn,
                attempt=attempt,
                model=inp.model,
                text=text,
                tool_calls=tool_calls,
                call_values=call_values,
            ),
        )
        activity.logger.info(
            "model turn %s: %d chars, %d tool calls, %d delta commits",
            inp.turn,
            len(text),
            len(tool_calls),
            writer.commits,
        )
        return _result(inp.turn, message.content or "", message.tool_calls or [], call, False)

    async def _failed(
        self,
        inp: ModelTurnInput,
        attempt: int,
        model_attempt: int,
        config: AgentConfig,
        started: float,
        first_token: float | None,
        exc: Exception,
    ) -> ApplicationError:
        """Record the failed attempt and classify it: retry (after Retry-After) or not."""
        status: int | None = None
        retryable = True
        delay: float | None = None
        if isinstance(exc, StallError):
            message = str(exc)
            error_type = "ModelTimeout"
        elif isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            message = f"model endpoint answered HTTP {status}: {_provider_message(exc)}"
            if status in NON_RETRYABLE_STATUSES or _is_context_length(exc):
                retryable = False
            elif status in RETRYABLE_STATUSES or status >= 500:
                delay = retry_after_seconds(exc.response.headers)
            else:
                retryable = False
            error_type = f"ModelHTTP{status}"
        elif isinstance(exc, openai.APITimeoutError):
            message = f"model stream stalled or timed out: {exc}"
            error_type = "ModelTimeout"
        elif isinstance(exc, openai.APIConnectionError):
            message = f"connection to the model endpoint failed: {exc.__cause__ or exc}"
            error_type = "ModelConnection"
        elif isinstance(exc, IncompleteStreamError | json.JSONDecodeError | openai.APIError):
            message = f"the model stream was incomplete or malformed: {exc}"
            error_type = "ModelStream"
        else:
            message = f"model call failed: {type(exc).__name__}: {exc}"
            error_type = "ModelError"
        if retryable and model_attempt >= config.model_max_attempts:
            retryable = False
            message += f" (attempt {model_attempt} of {config.model_max_attempts}: giving up)"
        latency_ms = int((time.monotonic() - started) * 1000)
        ttft_ms = int((first_token - started) * 1000) if first_token else None
        await self._db(
            "record the failed attempt",
            lambda: self.repo.record_llm_call(
                run_id=inp.run_id,
                turn=inp.turn,
                attempt=attempt,
                model=inp.model,
                status=LlmCallStatus.ERROR,
                values=LlmCallValues(
                    http_status=status,
                    error=message,
                    latency_ms=latency_ms,
                    time_to_first_token_ms=ttft_ms,
                ),
            ),
        )
        await self._db(
            "record the error event",
            lambda: self.repo.append_event(
                inp.run_id,
                ErrorData(
                    turn=inp.turn,
                    attempt=attempt,
                    message=message,
                    retryable=retryable,
                    retry_after_s=delay,
                ),
                key=event_key(EventType.ERROR, "model", inp.turn, attempt),
            ),
        )
        return ApplicationError(
            message,
            type=error_type,
            non_retryable=not retryable,
            next_retry_delay=timedelta(seconds=min(delay, MAX_RETRY_AFTER_S))
            if delay is not None
            else None,
        )


@dataclass
class _Beat:
    """What this attempt's heartbeats carry (the next attempt reads the last of them)."""

    db_only: list[int] = field(default_factory=list)
    model_called: bool = False

    def send(self) -> None:
        activity.heartbeat({"db_only_attempts": self.db_only})


_BEAT: ContextVar[_Beat | None] = ContextVar("agentrun_model_beat", default=None)


def _db_only_attempts(details: Sequence[Any]) -> list[int]:
    # Tolerant: details from another version of this activity, or none, mean none.
    last = details[-1] if details else None
    attempts = last.get("db_only_attempts") if isinstance(last, dict) else None
    if not isinstance(attempts, list):
        return []
    return [a for a in attempts if isinstance(a, int)]


def _heartbeat() -> None:
    beat = _BEAT.get()
    if beat is not None:
        beat.send()
    else:
        activity.heartbeat()


async def _heartbeat_forever() -> None:
    while True:
        _heartbeat()
        await asyncio.sleep(HEARTBEAT_EVERY_S)


def _result(
    turn: int, text: str, tool_calls: list[dict[str, Any]], call: Any, replayed: bool
) -> ModelTurnResult:
    text_preview, _ = preview(text)
    return ModelTurnResult(
        turn=turn,
        text_preview=text_preview,
        text_chars=len(text),
        tool_calls=[
            ToolCallRequest(
                id=c["id"], name=c["function"]["name"], arguments=c["function"]["arguments"]
            )
            for c in tool_calls
        ],
        finish_reason=getattr(call, "finish_reason", None),
        response_id=getattr(call, "response_id", None),
        usage=Usage(
            prompt_tokens=getattr(call, "prompt_tokens", None) or 0,
            completion_tokens=getattr(call, "completion_tokens", None) or 0,
            llm_calls=1,
            turns=1,
        ),
        replayed=replayed,
    )
