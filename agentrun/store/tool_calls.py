"""Tool calls: one row per call (made with its model turn), its waits, decision, execution
attempts and result.

Tools run at least once; the tool_call_id is their idempotency key. A recorded result is final:
a repeat returns it, and an attempt is not started again once the call has one.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agentrun.contracts import PendingCall, RecordedDecision
from agentrun.db.models import Message, Run, RunStatus, ToolCall, ToolCallStatus
from agentrun.protocol.events import (
    EventType,
    RunStatusData,
    ToolDecidedData,
    ToolResultData,
    ToolResultRequestedData,
    ToolWaitData,
)
from agentrun.protocol.statuses import Decision, WaitKind
from agentrun.store.engine import NotFoundError, idempotency_key, insert_once, utcnow
from agentrun.store.events import EventIn, append_locked, event_key, lock_run
from agentrun.store.turns import estimate_tokens


def _not_found(run_id: str, tool_call_id: str) -> NotFoundError:
    return NotFoundError(f"run {run_id!r} has no tool call {tool_call_id!r}")


async def get_tool_call(db: AsyncSession, run_id: str, tool_call_id: str) -> ToolCall:
    row = (
        await db.execute(
            select(ToolCall).where(ToolCall.run_id == run_id, ToolCall.tool_call_id == tool_call_id)
        )
    ).scalar_one_or_none()
    if row is None:
        raise _not_found(run_id, tool_call_id)
    return row


async def lock_tool_call(db: AsyncSession, run_id: str, tool_call_id: str) -> ToolCall:
    call = (
        await db.execute(
            select(ToolCall)
            .where(ToolCall.run_id == run_id, ToolCall.tool_call_id == tool_call_id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if call is None:
        raise _not_found(run_id, tool_call_id)
    return call


async def claim_tool_attempt(
    db: AsyncSession, run_id: str, tool_call_id: str, *, max_attempts: int | None = None
) -> tuple[ToolCall, bool]:
    """Count an execution attempt unless the call has a result or has already been started
    `max_attempts` times; returns (row, started). The count lives in the row, so it holds
    across worker deaths that Temporal's own attempt counter sees as timeouts."""
    row = await lock_tool_call(db, run_id, tool_call_id)
    if ToolCallStatus(row.status).terminal:
        return row, False
    if max_attempts is not None and row.attempts >= max_attempts:
        return row, False
    row.status = ToolCallStatus.RUNNING.value
    row.attempts += 1
    row.started_at = row.started_at or utcnow()
    return row, True


async def record_tool_result(
    db: AsyncSession,
    *,
    session_id: str,
    run_id: str,
    tool_call_id: str,
    result: str,
    is_error: bool,
) -> tuple[ToolCall, Message]:
    """Record a tool's result on its row, as a tool message, and as a tool.result event, all
    in one transaction; a repeat returns what was recorded first."""
    run = await lock_run(db, run_id)
    call = await lock_tool_call(db, run_id, tool_call_id)
    message, inserted = await insert_once(
        db,
        Message,
        {
            "idempotency_key": idempotency_key(run_id, "tool", tool_call_id),
            "session_id": session_id,
            "run_id": run_id,
            "turn": call.turn,
            "role": "tool",
            "content": result,
            "tool_call_id": tool_call_id,
            "name": call.name,
            "token_estimate": estimate_tokens(result),
        },
        Message.idempotency_key,
    )
    if not inserted:
        return call, message
    call.status = (ToolCallStatus.ERROR if is_error else ToolCallStatus.SUCCEEDED).value
    call.result = result
    call.is_error = is_error
    call.finished_at = utcnow()
    recorded = ToolResultData(
        tool_call_id=tool_call_id, name=call.name, is_error=is_error, result=result
    )
    await append_locked(
        db, run, [EventIn.of(recorded, key=event_key(EventType.TOOL_RESULT, tool_call_id))]
    )
    return call, message


async def request_waits(
    db: AsyncSession, run_id: str, calls: Sequence[PendingCall]
) -> tuple[Run, bool]:
    """Mark calls as waiting for a person (approval) or a caller (client-side result): the
    tool_calls rows, a tool.approval_requested / tool.result_requested event each, and
    WAITING_APPROVAL when an approval is among them. Returns (run, status_changed)."""
    run = await lock_run(db, run_id)
    events = []
    for c in calls:
        row = await lock_tool_call(db, run_id, c.tool_call_id)
        approval = c.kind == WaitKind.APPROVAL
        if approval and row.status == ToolCallStatus.PENDING:
            row.status = ToolCallStatus.PENDING_APPROVAL.value
        requested = (ToolWaitData if approval else ToolResultRequestedData)(
            tool_call_id=c.tool_call_id,
            name=c.name,
            arguments=c.arguments,
            arguments_sha256=c.arguments_sha256,
            turn=c.turn,
        )
        events.append(EventIn.of(requested, key=event_key(requested.TYPE, c.tool_call_id)))
    await append_locked(db, run, events)
    current = RunStatus(run.status)
    if current != RunStatus.RUNNING or not any(c.kind == WaitKind.APPROVAL for c in calls):
        return run, False
    run.status = RunStatus.WAITING_APPROVAL.value
    run.updated_at = utcnow()
    waiting = RunStatusData(status=RunStatus.WAITING_APPROVAL, previous=current)
    await append_locked(db, run, [EventIn.of(waiting)])
    return run, True


async def record_decision(db: AsyncSession, run_id: str, decision: RecordedDecision) -> ToolCall:
    """Record who decided what on a call, once: a repeat returns the first decision. The
    decision's `arguments` are the ones that run; they differ from the call's when edited."""
    d = decision
    run = await lock_run(db, run_id)
    row = await lock_tool_call(db, run_id, d.tool_call_id)
    if row.decision is not None:
        return row
    edited = d.arguments != row.arguments
    row.decision = Decision(d.decision).value
    row.decided_by = d.decided_by
    row.decision_reason = d.reason
    row.decided_at = utcnow()
    if edited:
        row.decided_arguments = d.arguments
    if not ToolCallStatus(row.status).terminal:
        rejected = d.decision == Decision.REJECT
        row.status = (ToolCallStatus.REJECTED if rejected else ToolCallStatus.APPROVED).value
    decided = ToolDecidedData(
        tool_call_id=d.tool_call_id,
        name=row.name,
        decision=d.decision,
        decided_by=d.decided_by,
        reason=d.reason,
        arguments=d.arguments,
        edited=edited,
    )
    await append_locked(
        db, run, [EventIn.of(decided, key=event_key(EventType.TOOL_DECIDED, d.tool_call_id))]
    )
    return row
