"""The durable agent loop on a real Temporal dev server and a real PostgreSQL, with the real
openai client streaming from the offline model server."""

from __future__ import annotations

import json
import uuid

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.contracts import RunResult
from agentrun.db.models import LlmCall, Message, ToolCall
from agentrun.protocol.events import EventType
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.testing.offline_model import Fault, OfflineModelServer, Reply, ToolCallSpec
from tests.conftest import next_event, start_input
from tests.store_helpers import count, run_llm_calls, run_tool_calls
from workflows.agent import AgentRunWorkflow


async def run_to_end(env: WorkflowEnvironment, settings: Settings, inp) -> RunResult:  # type: ignore[no-untyped-def]
    return await env.client.execute_workflow(
        AgentRunWorkflow.run, inp, id=inp.run_id, task_queue=settings.task_queue
    )


async def assert_gapless(repo: Repository, run_id: str) -> list:  # type: ignore[type-arg]
    events = await repo.read_events(run_id, 0, limit=100_000)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert (await repo.get_run(run_id)).last_event_seq == len(events)
    return events


async def test_two_turns_with_two_parallel_tool_calls(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"what is 6*7 and the time? {run_id}"
    model_server.script(
        prompt,
        [
            Reply(
                text="Checking both.",
                tool_calls=[
                    ToolCallSpec("calculator", {"expression": "6*7"}, id="call_calc"),
                    ToolCallSpec("current_time", {"timezone": "UTC"}, id="call_time"),
                ],
                args_chunk_chars=2,
            ),
            Reply(text="6*7 is 42, and I looked up the time."),
        ],
    )
    result = await run_to_end(temporal_env, settings, start_input(run_id, prompt))
    assert result.status == "DONE"
    assert result.final_text == "6*7 is 42, and I looked up the time."
    assert result.usage.turns == 2 and result.usage.llm_calls == 2 and result.usage.tool_calls == 2

    messages = await repo.run_messages(run_id)
    assert [(m.role, m.turn) for m in messages[:2]] == [("user", 0), ("assistant", 1)]
    assert messages[0].content == prompt
    assert messages[1].content == "Checking both."
    assert [c["id"] for c in messages[1].tool_calls or []] == ["call_calc", "call_time"]
    assert [json.loads(c["function"]["arguments"]) for c in messages[1].tool_calls or []] == [
        {"expression": "6*7"},
        {"timezone": "UTC"},
    ]
    tool_messages = sorted(messages[2:4], key=lambda m: m.tool_call_id or "")
    assert [(m.role, m.tool_call_id) for m in tool_messages] == [
        ("tool", "call_calc"),
        ("tool", "call_time"),
    ]
    assert tool_messages[0].content == "42"
    assert (messages[4].role, messages[4].turn, messages[4].content) == (
        "assistant",
        2,
        "6*7 is 42, and I looked up the time.",
    )
    assert len(messages) == 5

    calls = {c.tool_call_id: c for c in await run_tool_calls(repo, run_id)}
    assert set(calls) == {"call_calc", "call_time"}
    assert (calls["call_calc"].status, calls["call_calc"].result, calls["call_calc"].attempts) == (
        "succeeded",
        "42",
        1,
    )
    assert calls["call_time"].status == "succeeded" and not calls["call_time"].is_error

    llm = await run_llm_calls(repo, run_id)
    assert [(c.turn, c.attempt, c.status) for c in llm] == [(1, 1, "ok"), (2, 1, "ok")]
    assert all(c.prompt_tokens and c.completion_tokens and c.response_id for c in llm)
    assert all(c.finish_reason in ("tool_calls", "stop") for c in llm)
    assert llm[0].finish_reason == "tool_calls" and llm[1].finish_reason == "stop"

    events = await assert_gapless(repo, run_id)
    types = [e.type for e in events]
    statuses = [e.data["status"] for e in events if e.type == EventType.RUN_STATUS]
    assert statuses == ["QUEUED", "RUNNING", "DONE"]
    assert types.count(EventType.MESSAGE_COMPLETED) == 2 and types.count(EventType.LLM_USAGE) == 2
    assert types.count(EventType.TOOL_CALL) == 2 and types.count(EventType.TOOL_RESULT) == 2
    deltas = "".join(e.data["text"] for e in events if e.type == EventType.MESSAGE_DELTA)
    assert deltas == "Checking both." + "6*7 is 42, and I looked up the time."
    assert EventType.STREAM_RESET not in types

    run = await repo.get_run(run_id)
    assert (run.status, run.turns, run.llm_call_count, run.tool_call_count) == ("DONE", 2, 2, 2)
    assert run.final_text == result.final_text


async def test_rate_limit_then_success_waits_for_retry_after(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"hello {run_id}"
    model_server.script(
        prompt, [Fault("http", 429, "slow down", retry_after_s=2), Reply(text="Hi there.")]
    )
    result = await run_to_end(temporal_env, settings, start_input(run_id, prompt, tools=[]))
    assert result.status == "DONE" and result.final_text == "Hi there."
    hits = model_server.requests_for(prompt)
    assert [h.outcome for h in hits] == ["http 429", "ok"]
    assert hits[1].at - hits[0].at >= 2.0
    llm = await run_llm_calls(repo, run_id)
    assert [(c.attempt, c.status, c.http_status) for c in llm] == [
        (1, "error", 429),
        (2, "ok", 200),
    ]
    assert llm[0].error and "slow down" in llm[0].error
    events = await assert_gapless(repo, run_id)
    resets = [e for e in events if e.type == EventType.STREAM_RESET]
    assert [r.data for r in resets] == [{"turn": 1, "attempt": 2}]


@pytest.mark.parametrize(
    "fault",
    [
        Fault("http", 500, "upstream exploded"),
        Fault("drop", after_chunks=3),
        Fault("malformed", after_chunks=2),
    ],
    ids=["http500", "dropped", "malformed"],
)
async def test_transient_stream_faults_retry_and_reset_partial_text(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    fault: Fault,
) -> None:
    prompt = f"tell me something {run_id}"
    model_server.script(prompt, [fault, Reply(text="Something true.")])
    result = await run_to_end(temporal_env, settings, start_input(run_id, prompt, tools=[]))
    assert result.status == "DONE" and result.final_text == "Something true."
    llm = await run_llm_calls(repo, run_id)
    assert [(c.attempt, c.status) for c in llm] == [(1, "error"), (2, "ok")]
    events = await assert_gapless(repo, run_id)
    reset_at = next(i for i, e in enumerate(events) if e.type == EventType.STREAM_RESET)
    after_reset = "".join(
        e.data["text"] for e in events[reset_at:] if e.type == EventType.MESSAGE_DELTA
    )
    assert after_reset == "Something true."
    assert await count(repo, Message, run_id=run_id, role="assistant") == 1


async def test_bad_request_fails_the_run_with_the_provider_message(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"bad {run_id}"
    model_server.script(prompt, [Fault("http", 400, "Invalid value for 'temperature'.")])
    with pytest.raises(WorkflowFailureError) as info:
        await run_to_end(temporal_env, settings, start_input(run_id, prompt))
    assert "Invalid value for 'temperature'." in str(info.value.cause)
    assert len(model_server.requests_for(prompt)) == 1  # never retried
    run = await repo.get_run(run_id)
    assert run.status == "FAILED" and "Invalid value for 'temperature'." in (run.error or "")
    llm = await run_llm_calls(repo, run_id)
    assert [(c.status, c.http_status) for c in llm] == [("error", 400)]
    events = await assert_gapless(repo, run_id)
    assert events[-1].type == EventType.RUN_STATUS and events[-1].data["status"] == "FAILED"


async def test_bad_arguments_and_unknown_tool_give_error_results(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"use tools badly {run_id}"
    model_server.script(
        prompt,
        [
            Reply(
                tool_calls=[
                    ToolCallSpec("calculator", '{"expression": "1+', id="c_json"),
                    ToolCallSpec("calculator", {"expr": "1+1"}, id="c_field"),
                    ToolCallSpec("teleport", {"to": "mars"}, id="c_unknown"),
                    ToolCallSpec("calculator", {"expression": "1/0"}, id="c_raises"),
                    ToolCallSpec("read_file", {"path": "../../etc/passwd"}, id="c_escape"),
                ]
            ),
            Reply(text="Those all failed."),
        ],
    )
    result = await run_to_end(temporal_env, settings, start_input(run_id, prompt))
    assert result.status == "DONE" and result.final_text == "Those all failed."
    calls = {c.tool_call_id: c for c in await run_tool_calls(repo, run_id)}
    assert all(c.is_error and c.status == "error" for c in calls.values())
    assert "not valid JSON" in (calls["c_json"].result or "")
    assert "expression: Field required" in (calls["c_field"].result or "")
    # The workflow refuses a tool outside the run's set before any activity looks it up.
    assert "tool 'teleport' is not enabled for this run" in (calls["c_unknown"].result or "")
    assert "division by zero" in (calls["c_raises"].result or "")
    assert "outside the workspace" in (calls["c_escape"].result or "")
    # The model saw every error as a tool result in its second turn.
    second = model_server.requests_for(prompt)[-1].body["messages"]
    assert sorted(m["tool_call_id"] for m in second if m["role"] == "tool") == sorted(calls)


async def test_max_tool_calls_ends_with_a_turn_without_tools(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"loop forever {run_id}"
    calc = lambda n: Reply(  # noqa: E731
        tool_calls=[ToolCallSpec("calculator", {"expression": f"{n}+1"}, id=f"c{n}")]
    )
    model_server.script(prompt, [calc(1), calc(2), Reply(text="Stopping here.")])
    result = await run_to_end(
        temporal_env, settings, start_input(run_id, prompt, max_tool_calls=2, max_turns=10)
    )
    assert result.status == "DONE" and result.final_text == "Stopping here."
    bodies = [r.body for r in model_server.requests_for(prompt)]
    assert [bool(b.get("tools")) for b in bodies] == [True, True, False]
    assert await count(repo, ToolCall, run_id=run_id) == 2
    assert result.usage.turns == 3


async def test_max_turns_ends_with_a_turn_without_tools(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"keep going {run_id}"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("calculator", {"expression": "1+1"}, id="t1")]),
            Reply(text="Out of turns."),
        ],
    )
    result = await run_to_end(temporal_env, settings, start_input(run_id, prompt, max_turns=2))
    assert result.final_text == "Out of turns."
    bodies = [r.body for r in model_server.requests_for(prompt)]
    assert [bool(b.get("tools")) for b in bodies] == [True, False]


async def test_runs_in_one_session_continue_the_conversation(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    session_id = f"s-{uuid.uuid4()}"
    first, second = f"run-{uuid.uuid4()}", f"run-{uuid.uuid4()}"
    model_server.script(f"my name is Ada {first}", [Reply(text="Nice to meet you, Ada.")])
    model_server.script(f"what is my name {second}", [Reply(text="Your name is Ada.")])
    await run_to_end(
        temporal_env, settings, start_input(first, f"my name is Ada {first}", session_id)
    )
    await run_to_end(
        temporal_env, settings, start_input(second, f"what is my name {second}", session_id)
    )
    sent = model_server.requests_for(f"what is my name {second}")[0].body["messages"]
    assert [(m["role"], m.get("content")) for m in sent[1:]] == [
        ("user", f"my name is Ada {first}"),
        ("assistant", "Nice to meet you, Ada."),
        ("user", f"what is my name {second}"),
    ]


async def test_a_second_run_on_a_busy_session_is_refused(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    session_id = f"s-{uuid.uuid4()}"
    first, second = f"run-{uuid.uuid4()}", f"run-{uuid.uuid4()}"
    model_server.script(first, [Reply(text="slow answer " * 20, delay_s=0.05)])
    handle = await temporal_env.client.start_workflow(
        AgentRunWorkflow.run,
        start_input(first, f"long {first}", session_id, tools=[]),
        id=first,
        task_queue=settings.task_queue,
    )
    async for _ in repo.follow_events(first, 0, until_terminal=False):
        break  # the first run holds the session once its first event is written
    with pytest.raises(WorkflowFailureError) as info:
        await run_to_end(
            temporal_env, settings, start_input(second, f"second {second}", session_id)
        )
    assert f"already has an active run '{first}'" in str(info.value.cause)
    assert await repo.find_run(second) is None
    assert await count(repo, Message, run_id=second) == 0
    assert (await handle.result()).status == "DONE"
    # Once the first run is over, the session takes new runs again.
    third = f"run-{uuid.uuid4()}"
    result = await run_to_end(
        temporal_env, settings, start_input(third, f"third {third}", session_id)
    )
    assert result.status == "DONE"


async def test_a_repeated_start_returns_the_same_run(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    run_id: str,
) -> None:
    from temporalio.common import WorkflowIDConflictPolicy

    inp = start_input(run_id, f"hello {run_id}", tools=[])
    h1 = await temporal_env.client.start_workflow(
        AgentRunWorkflow.run,
        inp,
        id=run_id,
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    h2 = await temporal_env.client.start_workflow(
        AgentRunWorkflow.run,
        inp,
        id=run_id,
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    assert h1.result_run_id == h2.result_run_id
    assert (await h1.result()).status == "DONE"
    assert await count(repo, Message, run_id=run_id) == 2
    assert await count(repo, LlmCall, run_id=run_id) == 1


async def test_a_terminated_run_does_not_hold_its_session_forever(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    session_id = f"s-{uuid.uuid4()}"
    first, second = f"run-{uuid.uuid4()}", f"run-{uuid.uuid4()}"
    model_server.script(first, [Reply(text="never finished " * 200, delay_s=0.05)])
    handle = await temporal_env.client.start_workflow(
        AgentRunWorkflow.run,
        start_input(first, f"long {first}", session_id, tools=[]),
        id=first,
        task_queue=settings.task_queue,
    )
    await next_event(repo, first, EventType.MESSAGE_DELTA)
    # Terminate skips every clean-up in the workflow: the run row still says RUNNING.
    await handle.terminate(reason="operator pulled the plug")
    assert (await repo.get_run(first)).status == "RUNNING"
    result = await run_to_end(
        temporal_env, settings, start_input(second, f"next {second}", session_id, tools=[])
    )
    assert result.status == "DONE"
    gone = await repo.get_run(first)
    assert gone.status == "FAILED" and "TERMINATED" in (gone.error or "")
