"""Reads and set-ups that only tests need, over the production store.

Rows are made the way production makes them (a tool call exists because a model turn asked for
it); the reads here are the ones no production code needs.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from agentrun.contracts import ToolCallRequest
from agentrun.db.models import LlmCall, Message, ToolCall
from agentrun.store import LlmCallValues, Repository


async def count(repo: Repository, model: type[Any], **where: Any) -> int:
    """How many rows of `model` match the column values given."""
    async with repo.session() as db:
        stmt = select(func.count()).select_from(model)
        for name, value in where.items():
            stmt = stmt.where(getattr(model, name) == value)
        return int((await db.execute(stmt)).scalar_one())


async def run_tool_calls(repo: Repository, run_id: str) -> list[ToolCall]:
    async with repo.session() as db:
        rows = await db.execute(
            select(ToolCall).where(ToolCall.run_id == run_id).order_by(ToolCall.id)
        )
        return list(rows.scalars())


async def run_llm_calls(repo: Repository, run_id: str) -> list[LlmCall]:
    async with repo.session() as db:
        rows = await db.execute(
            select(LlmCall).where(LlmCall.run_id == run_id).order_by(LlmCall.id)
        )
        return list(rows.scalars())


def ok_values(**extra: Any) -> LlmCallValues:
    """What a successful model attempt measured, as the model-turn activity records it."""
    values: dict[str, Any] = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "latency_ms": 100,
        "http_status": 200,
        "finish_reason": "stop",
        **extra,
    }
    return LlmCallValues(**values)


async def model_turn(
    repo: Repository,
    run_id: str,
    session_id: str,
    *calls: ToolCallRequest,
    turn: int = 1,
    text: str = "",
) -> Message:
    """A model turn recorded as the model-turn activity records it (attempt 1, model "m"):
    the way a tool call's row comes to exist."""
    message, _, _ = await repo.record_model_turn(
        run_id=run_id,
        session_id=session_id,
        turn=turn,
        attempt=1,
        model="m",
        text=text,
        tool_calls=list(calls),
        call_values=ok_values(),
    )
    return message
