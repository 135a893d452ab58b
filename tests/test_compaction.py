"""Compaction by summary (context_strategy "summarize") on a real Temporal dev server, a real
PostgreSQL and the offline model server: a scripted chat crosses its token budget, a summary is
recorded once (a failed attempt after it was recorded does not make a second), later turns send
it instead of what it covers, tool call/result pairs stay whole; a failing summary falls back
to trimming with an event."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.context import SUMMARY_HEADING
from agentrun.client import run_status
from agentrun.contracts import RunResult
from agentrun.db.models import LlmCall, Message
from agentrun.protocol.events import EventType
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.testing.offline_model import Fault, OfflineModelServer, Reply, ToolCallSpec
from tests.conftest import start_input
from tests.store_helpers import run_llm_calls
from workflows.agent import AgentRunWorkflow

FILLER = "The quick brown fox jumps over the lazy dog again and again. " * 13  # ~800 chars
CONFIG: dict[str, Any] = {
    "context_strategy": "summarize",
    "context_token_budget": 1_000,
    "summary_keep_share": 0.5,
    "tools": ["calculator"],
    "model_max_attempts": 3,
}


async def _chat(
    env: WorkflowEnvironment, settings: Settings, session: str, tag: str, n: int, **config: Any
) -> list[RunResult]:
    results = []
    for i in range(1, n + 1):
        inp = start_input(f"run-{tag}-{i}", f"{tag} q{i} {FILLER}", session, **config)
        results.append(
            await env.client.execute_workflow(
                AgentRunWorkflow.run, inp, id=inp.run_id, task_queue=settings.task_queue
            )
        )
    return results


async def _session_messages(repo: Repository, session: str) -> list[Message]:
    async with repo.session() as db:
        rows = await db.execute(
            select(Message).where(Message.session_id == session).order_by(Message.id)
        )
        return list(rows.scalars())


def _pairs_whole(messages: list[dict[str, Any]]) -> None:
    """Every tool result follows the assistant message that called it, and every call has
    its result."""
    open_calls: set[str] = set()
    for m in messages:
        if m["role"] == "assistant":
            assert not open_calls, messages
            open_calls = {c["id"] for c in m.get("tool_calls") or []}
        elif m["role"] == "tool":
            open_calls.remove(m["tool_call_id"])
        else:
            assert not open_calls, messages


def _script_runs(model_server: OfflineModelServer, tag: str, n: int) -> None:
    for i in range(1, n + 1):
        steps: list[Any] = [Reply(text=f"a{i} {FILLER}")]
        if i == 2:  # a tool call and its result, to be summarised whole
            steps.insert(
                0, Reply(tool_calls=[ToolCallSpec("calculator", {"expression": "6*7"}, id="c1")])
            )
        if i == 3:  # the turn that compacts fails once after the summary was recorded
            steps.insert(0, Fault("http", 500, "internal error"))
        model_server.script(f"{tag} q{i}", steps)


async def test_summary_recorded_once_and_carried(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    tag, session = f"t{uuid.uuid4().hex[:10]}", f"s-{uuid.uuid4()}"
    # Summary requests carry the covered prompts ("User: <tag> q1 ..."); scripted first so
    # that they match before the runs' own keys.
    model_server.script(
        f"User: {tag}", [Reply(text=f"SUMMARY-ONE {tag}"), Reply(text=f"SUMMARY-TWO {tag}")]
    )
    _script_runs(model_server, tag, 6)
    results = await _chat(temporal_env, settings, session, tag, 6, **CONFIG)
    assert [r.status for r in results] == ["DONE"] * 6

    messages = await _session_messages(repo, session)
    summaries = [m for m in messages if m.kind == "summary"]
    # Run 3 crossed the budget: one summary although its turn was attempted twice.
    assert [s.run_id for s in summaries][:1] == [f"run-{tag}-3"]
    assert len({s.idempotency_key for s in summaries}) == len(summaries) >= 2
    first = summaries[0]
    assert first.content == f"SUMMARY-ONE {tag}"
    assert first.covers_to_id is not None
    # The originals stay in the record.
    assert sum(1 for m in messages if m.kind is None and m.id <= first.covers_to_id) >= 4
    run3 = await run_llm_calls(repo, f"run-{tag}-3")
    assert [(c.turn, c.status) for c in run3 if c.turn < 0] == [(-1, "ok")]
    assert sorted(c.status for c in run3 if c.turn == 1) == ["error", "ok"]
    events = await repo.read_events(f"run-{tag}-3", 0)
    compacted = [e for e in events if e.type == EventType.CONTEXT_COMPACTED.value]
    assert len(compacted) == 1 and compacted[0].data["covers_to_id"] == first.covers_to_id
    # Summary tokens count in the run's usage.
    summary_call = next(c for c in run3 if c.turn == -1)
    assert (summary_call.prompt_tokens or 0) > 0
    assert results[2].usage.prompt_tokens >= (summary_call.prompt_tokens or 0)
    # The workflow's own usage (its status query, what budgets read) counts it too.
    live = await run_status(temporal_env.client, f"run-{tag}-3")
    assert live.usage.prompt_tokens == results[2].usage.prompt_tokens
    assert live.usage.completion_tokens == results[2].usage.completion_tokens

    # The summariser saw the tool call with its result; run 4 was sent the summary, not the
    # messages it covers, and every request kept its tool pairs whole.
    summary_requests = model_server.requests_for(f"User: {tag}")
    assert len(summary_requests) == len(summaries)
    assert "calculator" in summary_requests[0].body["messages"][1]["content"]
    assert "SUMMARY-ONE" in summary_requests[1].body["messages"][1]["content"]
    run4 = model_server.requests_for(f"{tag} q4")[-1].body["messages"]
    assert SUMMARY_HEADING in run4[0]["content"] and f"SUMMARY-ONE {tag}" in run4[0]["content"]
    assert not any(f"{tag} q1 " in (m.get("content") or "") for m in run4)
    for i in range(1, 7):
        for request in model_server.requests_for(f"{tag} q{i}"):
            _pairs_whole(request.body["messages"])


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (Fault("http", 400, "summaries are off today"), "summaries are off today"),
        (Reply(text=""), "no text"),
    ],
    ids=["model-error", "empty-answer"],
)
async def test_failed_summary_falls_back_to_trimming(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    answer: Any,
    error: str,
) -> None:
    tag, session = f"t{uuid.uuid4().hex[:10]}", f"s-{uuid.uuid4()}"
    model_server.script(f"User: {tag}", [answer])
    for i in range(1, 4):
        model_server.script(f"{tag} q{i}", [Reply(text=f"a{i} {FILLER}")])
    results = await _chat(temporal_env, settings, session, tag, 3, **CONFIG)
    assert [r.status for r in results] == ["DONE"] * 3

    messages = await _session_messages(repo, session)
    assert not [m for m in messages if m.kind == "summary"]
    events = await repo.read_events(f"run-{tag}-3", 0)
    failed = [e for e in events if e.type == EventType.CONTEXT_COMPACTION_FAILED.value]
    assert len(failed) == 1 and error in failed[0].data["error"]
    async with repo.session() as db:
        rows = await db.execute(
            select(LlmCall).where(LlmCall.run_id == f"run-{tag}-3", LlmCall.turn == -1)
        )
        calls = list(rows.scalars())
    assert [c.status for c in calls] == ["error"]
    # Trimmed instead: the oldest prompt is not sent, the run's own prompt is.
    sent = model_server.requests_for(f"{tag} q3")[-1].body["messages"]
    assert not any(f"{tag} q1 " in (m.get("content") or "") for m in sent)
    assert sent[-1]["content"].startswith(f"{tag} q3")
    assert SUMMARY_HEADING not in sent[0]["content"]
