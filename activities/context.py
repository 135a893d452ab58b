"""Build a model's context from the database: system prompt, the session's earlier messages and
this run's messages, trimmed oldest first to a token budget, never separating an assistant
message that has tool calls from its tool results.

With a compaction summary (activities/compaction.py) the summary joins the system message and
the messages it covers are left out; summary messages themselves are never sent as messages."""

from __future__ import annotations

from typing import Any

from agentrun.db.models import Message
from agentrun.protocol.queue import MessageState
from agentrun.store import Repository, estimate_tokens

MISSING_RESULT = "no result: the run ended before this tool call was carried out"
# Older messages are read newest first in pages of this many rows, until the budget is met.
PAGE_ROWS = 100
SUMMARY_KIND = "summary"
SUMMARY_HEADING = "Summary of the earlier conversation (its messages are no longer shown):"


def visible(messages: list[Message], summary: Message | None = None) -> list[Message]:
    """The messages a context may hold: conversation messages, less those `summary` covers
    and those of rolled-back runs (kept in the record, never sent again: double-texting)."""
    covered = (summary.covers_to_id or 0) if summary is not None else 0
    return [
        m
        for m in messages
        if m.kind is None and m.id > covered and m.state != MessageState.ROLLED_BACK
    ]


def head_of(system_prompt: str, summary: Message | None) -> dict[str, Any]:
    """The system message, with the summary (if any) after the system prompt: one system
    message, which every provider takes."""
    if summary is None:
        return {"role": "system", "content": system_prompt}
    text = f"{system_prompt}\n\n{SUMMARY_HEADING}\n{summary.content or ''}"
    return {"role": "system", "content": text}


def to_openai(message: Message) -> dict[str, Any]:
    if message.role == "assistant":
        out: dict[str, Any] = {"role": "assistant", "content": message.content or None}
        if message.tool_calls:
            out["tool_calls"] = message.tool_calls
        return out
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    return {"role": message.role, "content": message.content or ""}


def _units(messages: list[Message]) -> list[tuple[Message, list[dict[str, Any]]]]:
    """Group messages into the pieces that may be dropped whole: a user message, a plain
    assistant message, or an assistant message with tool calls plus all of their results."""
    units: list[tuple[Message, list[dict[str, Any]]]] = []
    i = 0
    while i < len(messages):
        m = messages[i]
        if m.role == "assistant" and m.tool_calls:
            unit = [to_openai(m)]
            wanted = [c["id"] for c in m.tool_calls]
            results: dict[str, dict[str, Any]] = {}
            j = i + 1
            while j < len(messages) and messages[j].role == "tool":
                results[messages[j].tool_call_id or ""] = to_openai(messages[j])
                j += 1
            # A run that ended (cancelled, failed) between a call and its result would leave
            # the pair split, which every provider rejects; fill the gap.
            for call_id in wanted:
                unit.append(
                    results.get(call_id)
                    or {"role": "tool", "tool_call_id": call_id, "content": MISSING_RESULT}
                )
            units.append((m, unit))
            i = j
            continue
        if m.role == "tool":  # a result without its call: not sendable, skip it
            i += 1
            continue
        units.append((m, [to_openai(m)]))
        i += 1
    return units


def _tokens(unit: list[dict[str, Any]]) -> int:
    total = 0
    for m in unit:
        total += 4 + estimate_tokens(m.get("content") if isinstance(m.get("content"), str) else "")
        for c in m.get("tool_calls") or []:
            total += estimate_tokens(c["function"]["arguments"]) + 8
    return total


def build_context(
    system_prompt: str,
    messages: list[Message],
    run_id: str,
    token_budget: int,
    summary: Message | None = None,
) -> list[dict[str, Any]]:
    """The messages to send, oldest dropped first until they fit the budget. The current
    run's user message and everything after it are kept whatever the budget."""
    units = _units(visible(messages, summary))
    head = head_of(system_prompt, summary)
    first_of_run = next(
        (i for i, (m, _) in enumerate(units) if m.run_id == run_id and m.role == "user"),
        max(len(units) - 1, 0),
    )
    budget = token_budget - _tokens([head])
    kept_tail = [unit for _, unit in units[first_of_run:]]
    used = sum(_tokens(u) for u in kept_tail)
    kept_head: list[list[dict[str, Any]]] = []
    for _, unit in reversed(units[:first_of_run]):
        cost = _tokens(unit)
        if used + cost > budget:
            break
        kept_head.insert(0, unit)
        used += cost
    # A context must not open with a tool result or an assistant turn cut from its prompt.
    while kept_head and kept_head[0][0]["role"] != "user":
        kept_head.pop(0)
    out = [head]
    for unit in kept_head + kept_tail:
        out.extend(unit)
    return out


async def load_context(
    repo: Repository,
    system_prompt: str,
    session_id: str,
    run_id: str,
    token_budget: int,
    summary: Message | None = None,
) -> list[dict[str, Any]]:
    """build_context over the session, reading only as much of its history as the budget can
    hold: the current run's messages whole, then earlier messages newest first, a page at a
    time, until the complete units read (from a user message on) cost more than the budget
    left. build_context keeps a run of newest units that fit and stops at the first that does
    not, so the older messages never read could not have been kept: the result is the same
    as over the whole session. Messages a `summary` covers are not read."""
    current = visible(await repo.run_messages(run_id), summary)
    tail_start = next((m for m in current if m.role == "user"), current[0] if current else None)
    if tail_start is None:
        messages = await repo.session_messages(session_id)
        return build_context(system_prompt, messages, run_id, token_budget, summary)
    current = [m for m in current if m.id >= tail_start.id]
    covered = (summary.covers_to_id or 0) if summary is not None else 0
    left = (
        token_budget
        - _tokens([head_of(system_prompt, summary)])
        - sum(_tokens(unit) for _, unit in _units(current))
    )
    older: list[Message] = []  # newest first
    before: int | None = tail_start.id
    while True:
        page = await repo.session_messages_before(session_id, before, PAGE_ROWS)
        older.extend(visible(page, summary))
        if len(page) < PAGE_ROWS or page[-1].id <= covered:
            break  # the whole session (after what the summary covers) is read
        before = page[-1].id
        if left < 0 or _cost_from_first_user(older[::-1]) > left:
            break
    return build_context(system_prompt, older[::-1] + current, run_id, token_budget, summary)


def _cost_from_first_user(messages: list[Message]) -> int:
    """The cost of the units from the first user message on: a unit that starts there is
    whole, whatever came before it."""
    start = next((i for i, m in enumerate(messages) if m.role == "user"), len(messages))
    return sum(_tokens(unit) for _, unit in _units(messages[start:]))
