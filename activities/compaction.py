"""Compaction by summary (AgentConfig.context_strategy "summarize").

Before a model turn builds its context, a session over its token budget has its oldest messages
summarised by the model: the summary is recorded as a message (kind "summary", covers_to_id the
last message it stands for) with an idempotency key of the run and turn, so a retried turn
never makes a second one, and later contexts send the summary instead of what it covers (the
originals stay in the record). Only messages before the current run's prompt are summarised;
the current run's own messages are kept whole, as trimming keeps them.

It runs inside the model-turn activity (an activity, retried as one); a summary that fails
(model error, timeout, empty answer) is recorded as a failed llm_calls row and a
`context.compaction_failed` event, and the turn's context is trimmed instead. Summary calls
are llm_calls rows of turn -n (the summary made before turn n): they count in the run's token
totals but not in the turn's model attempts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from openai import AsyncOpenAI
from sqlalchemy import func, select

from activities.context import SUMMARY_KIND, _tokens, _units, head_of, visible
from agentrun.contracts import AgentConfig, ModelTurnInput, ModelTurnResult
from agentrun.db.models import LlmCall, Message
from agentrun.pricing import Pricing, measured
from agentrun.protocol.events import (
    ContextCompactedData,
    ContextCompactionFailedData,
    EventType,
)
from agentrun.protocol.statuses import LlmCallStatus
from agentrun.store import LlmCallValues, Repository, estimate_tokens, event_key, idempotency_key
from agentrun.store.engine import insert_once
from agentrun.store.events import EventIn, append_locked, lock_run
from agentrun.store.turns import insert_llm_call
from agentrun.store.usage import turn_usage

__all__ = ["Compactor", "summary_key", "with_summary_usage"]

T = TypeVar("T")
Db = Callable[[str, Callable[[], Awaitable[T]]], Awaitable[T]]
INSTRUCTIONS = (
    "You compact a conversation between a user and an AI assistant that uses tools. Write a "
    "concise summary that keeps every fact, decision, name, number, file path, open question "
    "and the user's goals and preferences that later turns may need. Write it in the third "
    "person, as plain text, without preamble."
)
# One message's share of the material sent to the summariser; longer ones are cut.
MESSAGE_CHARS = 8_000
ERROR_CHARS = 500


def summary_key(run_id: str, turn: int) -> str:
    """The idempotency key of the summary made before a run's turn (stored: never change)."""
    return idempotency_key(run_id, turn, "summary")


class Compactor:
    """The summarising step of a model turn; `db` waits out a lost database as the turn does."""

    def __init__(
        self, repo: Repository, client: Callable[[], AsyncOpenAI], db: Any, pricing: Pricing
    ) -> None:
        self.repo = repo
        self.client = client
        self.db = db
        self.pricing = pricing

    async def summary_for(
        self, inp: ModelTurnInput, config: AgentConfig, attempt: int
    ) -> Message | None:
        """The summary the turn's context uses: a new one when the session is over budget,
        else the latest recorded (None: none yet, or compaction failed before any)."""
        latest, done = await self.db("read the summary", lambda: self._latest(inp))
        if done:
            return latest
        messages = await self.db(
            "read the session for compaction",
            lambda: self._uncovered(inp.session_id, latest),
        )
        plan = _plan(config, latest, messages, inp.run_id)
        if plan is None:
            return latest
        covered, covers_to_id = plan
        model = config.summary_model or inp.model
        started = time.monotonic()
        try:
            text, usage = await self._summarise(model, config, latest, covered)
        except Exception as exc:  # the model's error, a timeout, an empty answer: trim instead
            failure = exc
            await self.db(
                "record the failed summary",
                lambda: self._failed(inp, attempt, model, started, failure),
            )
            return latest
        return await self.db(
            "record the summary",
            lambda: self._record(inp, attempt, model, text, usage, covers_to_id, len(covered)),
        )

    async def _latest(self, inp: ModelTurnInput) -> tuple[Message | None, bool]:
        async with self.repo.session() as db:
            rows = await db.execute(
                select(Message)
                .where(Message.session_id == inp.session_id, Message.kind == SUMMARY_KIND)
                .order_by(Message.covers_to_id.desc(), Message.id.desc())
                .limit(1)
            )
            latest = rows.scalars().first()
            mine = await db.execute(
                select(Message.id).where(
                    Message.idempotency_key == summary_key(inp.run_id, inp.turn)
                )
            )
            return latest, mine.scalar_one_or_none() is not None

    async def _uncovered(self, session_id: str, latest: Message | None) -> list[Message]:
        covered = (latest.covers_to_id or 0) if latest is not None else 0
        async with self.repo.session() as db:
            rows = await db.execute(
                select(Message)
                .where(Message.session_id == session_id, Message.id > covered)
                .order_by(Message.id)
            )
            return visible(list(rows.scalars()))

    async def _summarise(
        self,
        model: str,
        config: AgentConfig,
        latest: Message | None,
        covered: list[Message],
    ) -> tuple[str, Any]:
        material = _transcript(latest, covered)
        wait = min(config.summary_timeout_s, config.model_timeout_s / 2)
        create: Any = self.client().chat.completions.create
        async with asyncio.timeout(wait):
            answer = await create(
                model=model,
                messages=[
                    {"role": "system", "content": INSTRUCTIONS},
                    {"role": "user", "content": material},
                ],
                timeout=wait,
            )
        text = (answer.choices[0].message.content or "").strip() if answer.choices else ""
        if not text:
            raise ValueError("the model answered the summary request with no text")
        return text, answer.usage

    async def _record(
        self,
        inp: ModelTurnInput,
        attempt: int,
        model: str,
        text: str,
        usage: Any,
        covers_to_id: int,
        count: int,
    ) -> Message:
        # Priced as a turn's call is (the ledger adds it to the run's totals with the row).
        used = measured(self.pricing, model, usage)
        prompt_tokens = used.get("prompt_tokens") or 0
        completion_tokens = used.get("completion_tokens") or 0
        async with self.repo.transaction() as db:
            run = await lock_run(db, inp.run_id)
            message, created = await insert_once(
                db,
                Message,
                {
                    "idempotency_key": summary_key(inp.run_id, inp.turn),
                    "session_id": inp.session_id,
                    "run_id": inp.run_id,
                    "turn": inp.turn,
                    "role": "system",
                    "kind": SUMMARY_KIND,
                    "covers_to_id": covers_to_id,
                    "content": text,
                    "token_estimate": completion_tokens or estimate_tokens(text),
                },
                Message.idempotency_key,
            )
            if not created:
                return message
            values = LlmCallValues(
                **{**used, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
                http_status=200,
                finish_reason="stop",
            )
            await insert_llm_call(
                db, inp.run_id, -inp.turn, attempt, model, LlmCallStatus.OK, values
            )
            event = ContextCompactedData(
                turn=inp.turn,
                covers_to_id=covers_to_id,
                messages=count,
                model=model,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
            )
            key = event_key(EventType.CONTEXT_COMPACTED, inp.turn)
            await append_locked(db, run, [EventIn.of(event, key=key)])
            return message

    async def _failed(
        self, inp: ModelTurnInput, attempt: int, model: str, started: float, exc: Exception
    ) -> None:
        error = (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)[:ERROR_CHARS]
        async with self.repo.transaction() as db:
            run = await lock_run(db, inp.run_id)
            values = LlmCallValues(error=error, latency_ms=int((time.monotonic() - started) * 1000))
            await insert_llm_call(
                db, inp.run_id, -inp.turn, attempt, model, LlmCallStatus.ERROR, values
            )
            event = ContextCompactionFailedData(turn=inp.turn, attempt=attempt, error=error)
            key = event_key(EventType.CONTEXT_COMPACTION_FAILED, inp.turn, attempt)
            await append_locked(db, run, [EventIn.of(event, key=key)])


async def with_summary_usage(
    repo: Repository, run_id: str, turn: int, result: ModelTurnResult
) -> ModelTurnResult:
    """The turn's result with the usage of the summary made before it (if any) added: the
    run's usage (its status query, budgets) counts summary calls as the record does."""
    async with repo.session() as db:
        calls = (
            await db.execute(
                select(func.count()).where(
                    LlmCall.run_id == run_id,
                    LlmCall.turn == -turn,
                    LlmCall.status == LlmCallStatus.OK.value,
                )
            )
        ).scalar_one()
        if not calls:
            return result
        # Tokens, cached and reasoning tokens and cost as the ledger sums them.
        used = await turn_usage(db, run_id, -turn)
    extra = used.model_copy(update={"llm_calls": calls, "turns": 0})
    return result.model_copy(update={"usage": result.usage.add(extra)})


def _plan(
    config: AgentConfig, latest: Message | None, messages: list[Message], run_id: str
) -> tuple[list[Message], int] | None:
    """What to summarise: (the messages, the id of the last message covered), or None when the
    context fits or nothing before the current run's prompt is left to summarise.

    The newest units that fit in summary_keep_share of the budget (after the current run's
    messages) stay verbatim; the units before them are summarised, never a tool call without
    its results. Material is about one budget's worth (to the next prompt): the rest is left
    to a later turn."""
    start = next(
        (i for i, m in enumerate(messages) if m.run_id == run_id and m.role == "user"),
        len(messages),
    )
    older, tail = messages[:start], messages[start:]
    units = _units(older)
    tail_cost = sum(_tokens(u) for _, u in _units(tail))
    head_cost = _tokens([head_of(config.system_prompt, latest)])
    total = head_cost + tail_cost + sum(_tokens(u) for _, u in units)
    if total <= config.context_token_budget or not units:
        return None
    allowance = config.summary_keep_share * config.context_token_budget - tail_cost - head_cost
    keep_from = len(units)
    used = 0
    while keep_from > 0 and used + _tokens(units[keep_from - 1][1]) <= allowance:
        keep_from -= 1
        used += _tokens(units[keep_from][1])
    # A context opens with a user message: the assistant units before the first kept prompt
    # would be dropped by the context builder, so they go into the summary.
    while keep_from < len(units) and units[keep_from][0].role != "user":
        keep_from += 1
    cut, material = 0, 0
    cap = config.context_token_budget
    while cut < keep_from and (cut == 0 or material + _tokens(units[cut][1]) <= cap):
        material += _tokens(units[cut][1])
        cut += 1
    # Past the cap up to the next prompt: what stays must open with a user message.
    while cut < keep_from and units[cut][0].role != "user":
        cut += 1
    if cut == 0:
        return None
    boundary = units[cut][0].id if cut < len(units) else (tail[0].id if tail else None)
    covers_to_id = boundary - 1 if boundary is not None else older[-1].id
    covered = [m for m in older if m.id <= covers_to_id]
    return covered, covers_to_id


def _transcript(latest: Message | None, covered: list[Message]) -> str:
    parts = ["Summarise this conversation so far.\n"]
    if latest is not None and latest.content:
        parts.append(f"[Summary of what came before]\n{latest.content}\n")
    for m in covered:
        text = (m.content or "")[:MESSAGE_CHARS]
        if m.role == "assistant":
            calls = "; ".join(
                f"{c['function']['name']}({c['function']['arguments'][:MESSAGE_CHARS]})"
                for c in m.tool_calls or []
            )
            parts.append(f"Assistant: {text}" + (f"\n  [tool calls: {calls}]" if calls else ""))
        elif m.role == "tool":
            parts.append(f"Tool result ({m.tool_call_id}): {text}")
        else:
            parts.append(f"{m.role.capitalize()}: {text}")
    return "\n".join(parts)
