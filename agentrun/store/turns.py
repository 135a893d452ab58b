"""Turns: the conversation's messages and the llm_calls rows of every model attempt.

A model turn is recorded once, in one transaction (`record_model_turn`): the assistant message,
its llm_calls row, a tool_calls row per call, the run's totals and the message.completed,
tool.call and llm.usage events. Every attempt has an llm_calls row, failed ones too; an
attempt that left none (its worker died) gets a `lost` row from the next one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agentrun.contracts import ToolCallRequest
from agentrun.db.models import LlmCall, Message, Run, ToolCall, ToolCallStatus
from agentrun.protocol.events import (
    EventType,
    LlmUsageData,
    MessageCompletedData,
    ToolCallData,
    arguments_sha256,
)
from agentrun.protocol.statuses import LlmCallStatus
from agentrun.store.engine import idempotency_key, insert_once, utcnow
from agentrun.store.events import EventIn, append_locked, event_key, lock_run

# The statuses that spend a turn's model budget; DB_ERROR (the database failed before the
# model was called) does not.
MODEL_ATTEMPT_STATUSES = (LlmCallStatus.OK, LlmCallStatus.ERROR, LlmCallStatus.LOST)
LOST_ERROR = (
    "the attempt ended without a record: its worker was lost or it timed out (heartbeat or "
    "start-to-close)"
)
DB_ERROR = "the database was unavailable; the model was not called"


@dataclass(frozen=True)
class LlmCallValues:
    """What one model attempt measured: the llm_calls row's columns beyond its identity."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: int | None = None
    time_to_first_token_ms: int | None = None
    response_id: str | None = None
    finish_reason: str | None = None
    http_status: int | None = None
    error: str | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: Decimal | None = None


async def insert_llm_call(
    db: AsyncSession,
    run_id: str,
    turn: int,
    attempt: int,
    model: str,
    status: LlmCallStatus,
    values: LlmCallValues,
) -> tuple[LlmCall, bool]:
    """One llm_calls row per (run, turn, attempt); a new row counts on the run."""
    columns = dataclasses.asdict(values)
    row, inserted = await insert_once(
        db,
        LlmCall,
        {
            "idempotency_key": idempotency_key(run_id, turn, attempt),
            "run_id": run_id,
            "turn": turn,
            "attempt": attempt,
            "model": model,
            "status": status.value,
            **columns,
        },
        LlmCall.idempotency_key,
    )
    if inserted:
        await db.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(llm_call_count=Run.llm_call_count + 1, **usage_rollup(values))
        )
    elif status == LlmCallStatus.OK and row.status == LlmCallStatus.LOST:
        # The attempt was given up as lost (a later attempt started), yet it finished: its
        # success is the turn's record. The row already counts on the run; a lost row has
        # no usage, so the rollup takes this attempt's now.
        row.status = LlmCallStatus.OK.value
        for name, value in columns.items():
            setattr(row, name, value)
        await db.flush()
        await db.execute(update(Run).where(Run.id == run_id).values(**usage_rollup(values)))
    return row, inserted


def usage_rollup(values: LlmCallValues) -> dict[str, Any]:
    """The run's rollup columns plus one llm_calls row's usage (SQL expressions, so rows
    written at once by two attempts both count). A row that reported tokens but has no cost
    counts as unpriced; one that reported none adds nothing."""
    out: dict[str, Any] = {
        "prompt_tokens": Run.prompt_tokens + (values.prompt_tokens or 0),
        "completion_tokens": Run.completion_tokens + (values.completion_tokens or 0),
        "cached_tokens": Run.cached_tokens + (values.cached_tokens or 0),
        "reasoning_tokens": Run.reasoning_tokens + (values.reasoning_tokens or 0),
    }
    if values.cost_usd is not None:
        out["cost_usd"] = func.coalesce(Run.cost_usd, 0) + values.cost_usd
    elif values.prompt_tokens is not None or values.completion_tokens is not None:
        out["unpriced_calls"] = Run.unpriced_calls + 1
    return out


async def ok_call(db: AsyncSession, run_id: str, turn: int) -> LlmCall | None:
    """The successful model call of a recorded turn (the first, should there be two)."""
    rows = await db.execute(
        select(LlmCall)
        .where(LlmCall.run_id == run_id, LlmCall.turn == turn, LlmCall.status == LlmCallStatus.OK)
        .order_by(LlmCall.attempt)
        .limit(1)
    )
    return rows.scalars().first()


def _assistant_key(run_id: str, turn: int) -> str:
    return idempotency_key(run_id, turn, "assistant")


async def find_turn(
    db: AsyncSession, run_id: str, turn: int
) -> tuple[Message, LlmCall | None] | None:
    """The recorded assistant message of a turn and its successful model call, if any."""
    message = (
        await db.execute(
            select(Message).where(Message.idempotency_key == _assistant_key(run_id, turn))
        )
    ).scalar_one_or_none()
    if message is None:
        return None
    return message, await ok_call(db, run_id, turn)


async def model_attempts(db: AsyncSession, run_id: str, turn: int) -> list[LlmCall]:
    """The attempts of a turn that reached the model or were lost on the way (ok, error,
    lost): what the turn's model budget counts. Attempts that never got past the database are
    not among them."""
    rows = await db.execute(
        select(LlmCall)
        .where(
            LlmCall.run_id == run_id,
            LlmCall.turn == turn,
            LlmCall.status.in_(MODEL_ATTEMPT_STATUSES),
        )
        .order_by(LlmCall.attempt)
    )
    return list(rows.scalars())


async def mark_lost_attempts(
    db: AsyncSession,
    run_id: str,
    turn: int,
    attempt: int,
    model: str,
    *,
    not_lost: Sequence[int] = (),
) -> int:
    """Give every earlier attempt of a turn that left no llm_calls row (its worker died, or it
    stalled past its heartbeat timeout) a row that says so: `lost`, or `db_error` for those in
    `not_lost` (known to have failed on the database before they reached the model). Returns
    how many were lost."""
    have = set(
        (
            await db.execute(
                select(LlmCall.attempt).where(LlmCall.run_id == run_id, LlmCall.turn == turn)
            )
        ).scalars()
    )
    missing = [a for a in range(1, attempt) if a not in have]
    for a in missing:
        status, error = (
            (LlmCallStatus.DB_ERROR, DB_ERROR)
            if a in not_lost
            else (LlmCallStatus.LOST, LOST_ERROR)
        )
        await insert_llm_call(db, run_id, turn, a, model, status, LlmCallValues(error=error))
    return len([a for a in missing if a not in not_lost])


async def record_model_turn(
    db: AsyncSession,
    *,
    run_id: str,
    session_id: str,
    turn: int,
    attempt: int,
    model: str,
    text: str,
    tool_calls: Sequence[ToolCallRequest],
    call_values: LlmCallValues,
) -> tuple[Message, LlmCall, bool]:
    """Record a finished model turn in one transaction: the assistant message, the llm_calls
    row, a tool_calls row per call, the run's totals and the message.completed, tool.call and
    llm.usage events. Returns (message, llm_call, inserted); when the turn was already
    recorded, nothing is written and the first record is returned.

    A tool-call id that is empty or already used earlier in the run is replaced by one made
    from the turn and index, in the message and the tool_calls row alike.
    """
    run = await lock_run(db, run_id)
    key = _assistant_key(run_id, turn)
    existing = (
        await db.execute(select(Message).where(Message.idempotency_key == key))
    ).scalar_one_or_none()
    if existing is not None:
        call = await ok_call(db, run_id, turn)
        if call is None:
            # The turn was recorded by an attempt whose row is missing or not ok (a record
            # from before lost rows were upgraded): this attempt's success is as good a
            # record of it.
            call, _ = await insert_llm_call(
                db, run_id, turn, attempt, model, LlmCallStatus.OK, call_values
            )
        return existing, call, False
    calls = await _unique_calls(db, run_id, turn, tool_calls)
    completion_tokens = call_values.completion_tokens or 0
    message, _ = await insert_once(
        db,
        Message,
        {
            "idempotency_key": key,
            "session_id": session_id,
            "run_id": run_id,
            "turn": turn,
            "role": "assistant",
            "content": text,
            "tool_calls": [_openai_call(c) for c in calls] or None,
            "token_estimate": completion_tokens or estimate_tokens(text),
        },
        Message.idempotency_key,
    )
    llm_call, _ = await insert_llm_call(
        db, run_id, turn, attempt, model, LlmCallStatus.OK, call_values
    )
    for c in calls:
        await _insert_tool_call(db, run_id, turn, c)
    # The tokens and cost are on the run already: insert_llm_call rolls every row up.
    run.tool_call_count += len(calls)
    run.turns = max(run.turns, turn)
    run.updated_at = utcnow()
    await append_locked(db, run, _turn_events(turn, attempt, model, text, calls, call_values))
    return message, llm_call, True


async def _unique_calls(
    db: AsyncSession, run_id: str, turn: int, tool_calls: Sequence[ToolCallRequest]
) -> list[ToolCallRequest]:
    used = set(
        (await db.execute(select(ToolCall.tool_call_id).where(ToolCall.run_id == run_id))).scalars()
    )
    ids = unique_call_ids(turn, [c.id for c in tool_calls], used)
    return [c.model_copy(update={"id": i}) for c, i in zip(tool_calls, ids, strict=True)]


def _openai_call(call: ToolCallRequest) -> dict[str, object]:
    """A tool call as the chat-completions API writes it (how messages.tool_calls stores it)."""
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


async def _insert_tool_call(db: AsyncSession, run_id: str, turn: int, c: ToolCallRequest) -> None:
    await insert_once(
        db,
        ToolCall,
        {
            "idempotency_key": idempotency_key(run_id, c.id),
            "run_id": run_id,
            "turn": turn,
            "tool_call_id": c.id,
            "name": c.name,
            "arguments": c.arguments,
            "arguments_sha256": arguments_sha256(c.arguments),
            "status": ToolCallStatus.PENDING.value,
        },
        ToolCall.idempotency_key,
    )


def _turn_events(
    turn: int,
    attempt: int,
    model: str,
    text: str,
    calls: list[ToolCallRequest],
    values: LlmCallValues,
) -> list[EventIn]:
    completed = MessageCompletedData(
        turn=turn,
        attempt=attempt,
        role="assistant",
        text=text,
        tool_calls=[_openai_call(c) for c in calls],
    )
    usage = LlmUsageData(
        turn=turn,
        attempt=attempt,
        model=model,
        prompt_tokens=values.prompt_tokens or 0,
        completion_tokens=values.completion_tokens or 0,
        latency_ms=values.latency_ms,
        time_to_first_token_ms=values.time_to_first_token_ms,
    )
    # Only what was measured is stored (exclude_unset): no null fields on older models' rows.
    for name in ("cached_tokens", "reasoning_tokens", "cost_usd"):
        if getattr(values, name) is not None:
            setattr(usage, name, getattr(values, name))
    return [
        EventIn.of(completed, key=event_key(EventType.MESSAGE_COMPLETED, turn)),
        *(
            EventIn.of(
                ToolCallData(turn=turn, tool_call_id=c.id, name=c.name, arguments=c.arguments),
                key=event_key(EventType.TOOL_CALL, c.id),
            )
            for c in calls
        ),
        EventIn.of(usage, key=event_key(EventType.LLM_USAGE, turn)),
    ]


async def run_messages(db: AsyncSession, run_id: str) -> list[Message]:
    rows = await db.execute(select(Message).where(Message.run_id == run_id).order_by(Message.id))
    return list(rows.scalars())


async def session_messages(db: AsyncSession, session_id: str) -> list[Message]:
    rows = await db.execute(
        select(Message).where(Message.session_id == session_id).order_by(Message.id)
    )
    return list(rows.scalars())


async def session_messages_before(
    db: AsyncSession, session_id: str, before_id: int | None, limit: int
) -> list[Message]:
    """Up to `limit` messages of the session older than message `before_id` (all when None),
    newest first: a context is read backwards only as far as its budget needs."""
    stmt = select(Message).where(Message.session_id == session_id)
    if before_id is not None:
        stmt = stmt.where(Message.id < before_id)
    rows = await db.execute(stmt.order_by(Message.id.desc()).limit(limit))
    return list(rows.scalars())


def unique_call_ids(turn: int, ids: list[str], used: set[str]) -> list[str]:
    """The model's tool-call ids, with an empty id or one already used in the run (earlier, or
    in this same reply) replaced by `call_t{turn}_{index}`, suffixed until it is unused: unique
    by construction, so no call loses its row to another's."""
    taken = set(used)
    out = []
    for index, call_id in enumerate(ids):
        if not call_id or call_id in taken:
            base = f"call_t{turn}_{index}"
            call_id, n = base, 1
            while call_id in taken:
                n += 1
                call_id = f"{base}_{n}"
        taken.add(call_id)
        out.append(call_id)
    return out


def estimate_tokens(text_: str | None) -> int:
    """A cheap token estimate (about four characters a token) for context budgeting."""
    return 0 if not text_ else max(1, len(text_) // 4)
