"""How a model turn is recorded: the database calls of the model-turn activity (waiting out a
lost database), the llm_calls row of each attempt, the recorded turn, and the classification of
a failed attempt. ModelActivities (activities/model.py) is built on TurnRecording."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeats import heartbeat
from activities.model_errors import (
    MAX_RETRY_AFTER_S,
    DatabaseUnavailableError,
    classify,
    db_error_text,
    is_transient_db_error,
)
from activities.streaming import StreamedTurn
from agentrun.contracts import (
    AgentConfig,
    ModelTurnInput,
    ModelTurnResult,
    ToolCallRequest,
    Usage,
    preview,
)
from agentrun.pricing import Pricing, measured
from agentrun.protocol.events import ErrorData, EventType
from agentrun.protocol.statuses import LlmCallStatus
from agentrun.settings import Settings
from agentrun.store import LlmCallValues, Repository, event_key

__all__ = ["TurnRecording", "turn_result"]

T = TypeVar("T")


class TurnRecording:
    """The recording half of the model-turn activity."""

    repo: Repository
    settings: Settings
    pricing: Pricing

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
                        db_error_text(exc),
                        what,
                        self.settings.db_retry_s,
                    )
                if now >= deadline:
                    raise DatabaseUnavailableError(
                        f"the database was unavailable for {self.settings.db_retry_s:g}s while "
                        f"trying to {what}: {db_error_text(exc)}"
                    ) from None
                heartbeat()
                await asyncio.sleep(min(delay, max(0.0, deadline - now)))
                delay = min(delay * 2, 5.0)

    async def _record_attempt(
        self,
        inp: ModelTurnInput,
        attempt: int,
        turn: StreamedTurn,
        status: LlmCallStatus,
        error: str,
        ended: float,
        http_status: int | None = None,
    ) -> None:
        """The llm_calls row of an attempt that recorded no turn; `ended`: time.monotonic()."""
        await self.repo.record_llm_call(
            run_id=inp.run_id,
            turn=inp.turn,
            attempt=attempt,
            model=inp.model,
            status=status,
            values=LlmCallValues(
                http_status=http_status,
                error=error,
                latency_ms=turn.ms_since_start(ended),
                time_to_first_token_ms=turn.ms_since_start(turn.first_token),
                # What a failed attempt used counts, when the endpoint reported it.
                **measured(self.pricing, inp.model, turn.usage),
            ),
        )

    async def _record_turn(
        self, inp: ModelTurnInput, attempt: int, turn: StreamedTurn, tools_on: bool, commits: int
    ) -> ModelTurnResult:
        latency_ms = turn.ms_since_start(time.monotonic())
        # Tools were off for this turn: a call the model makes anyway cannot be answered.
        tool_calls = turn.tool_calls() if tools_on else []
        text = turn.text
        call_values = LlmCallValues(
            **measured(self.pricing, inp.model, turn.usage),
            latency_ms=latency_ms,
            time_to_first_token_ms=turn.ms_since_start(turn.first_token),
            response_id=turn.response_id,
            finish_reason=turn.finish_reason,
            http_status=200,
        )
        key = (inp.run_id, inp.turn)
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
            commits,
        )
        used = await self._db("read the turn's usage", lambda: self.repo.turn_usage(*key))
        return turn_result(
            inp.turn, message.content or "", message.tool_calls or [], call, False, used
        )

    async def _failed(
        self,
        inp: ModelTurnInput,
        attempt: int,
        model_attempt: int,
        config: AgentConfig,
        turn: StreamedTurn,
        exc: Exception,
    ) -> ApplicationError:
        """Record the failed attempt and classify it: retry (after Retry-After) or not."""
        failure = classify(exc, self.settings.model_endpoint)
        message, retryable, delay = failure.message, failure.retryable, failure.retry_after_s
        if retryable and model_attempt >= config.model_max_attempts:
            retryable = False
            message += f" (attempt {model_attempt} of {config.model_max_attempts}: giving up)"
        ended = time.monotonic()
        await self._db(
            "record the failed attempt",
            lambda: self._record_attempt(
                inp, attempt, turn, LlmCallStatus.ERROR, message, ended, failure.http_status
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
            type=failure.error_type,
            non_retryable=not retryable,
            next_retry_delay=timedelta(seconds=min(delay, MAX_RETRY_AFTER_S))
            if delay is not None
            else None,
        )


def turn_result(
    turn: int,
    text: str,
    tool_calls: list[dict[str, Any]],
    call: Any,
    replayed: bool,
    usage: Usage | None = None,
) -> ModelTurnResult:
    """The turn as the workflow gets it; `usage`: every attempt's (the ledger's), else the
    successful call's tokens alone."""
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
        usage=usage
        or Usage(
            prompt_tokens=getattr(call, "prompt_tokens", None) or 0,
            completion_tokens=getattr(call, "completion_tokens", None) or 0,
            llm_calls=1,
            turns=1,
        ),
        replayed=replayed,
    )
