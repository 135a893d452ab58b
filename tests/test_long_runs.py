"""Issue 16 item 3: very long runs continue-as-new at a turn boundary and nothing changes for
clients. A 300-turn run against the offline model crosses several boundaries: each execution's
history stays under a bound, the record is complete, usage agrees across the chain, and every
execution's history replays. Approvals (by update, and an early one by signal) and cancels work
across a boundary; a run continues when Temporal suggests it (a dev server of its own with a low
threshold); a carry that did not come from the run's own continue-as-new is refused."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHistory
from temporalio.common import WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from agentrun.client import (
    AgentRunClient,
    AlreadyDecided,
    RunRefused,
    run_histories,
    run_result,
    run_status,
)
from agentrun.contracts import OpenedRun, RunCarry, StartRunInput
from agentrun.db.models import LlmCall, Message, ToolCall
from agentrun.protocol.events import EventType, arguments_sha256
from agentrun.protocol.names import (
    SA_MODEL,
    SA_RUN_STATUS,
    SA_SESSION_ID,
    SA_WAITING_APPROVAL,
    ErrorType,
)
from agentrun.protocol.statuses import RunStatus
from agentrun.settings import Settings
from agentrun.stack import search_attribute_keys, temporal_cli_path
from agentrun.store import Repository, RunEndedError, RunOwnedError
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from tests.conftest import bash_call, start_input
from tests.store_helpers import count, run_llm_calls, run_tool_calls
from worker import build_worker
from workflows import ALL_WORKFLOWS
from workflows.agent import AgentRunWorkflow

TURNS = 300
EVERY = 40  # continue_as_new_after_turns of the 300-turn run: 8 executions
# An execution of EVERY turns of one tool call each: about 12 events and 2.5 KB per turn.
MAX_EVENTS = 15 * EVERY
MAX_BYTES = 3_000 * EVERY


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


def history_bytes(history: WorkflowHistory) -> int:
    return sum(e.ByteSize() for e in history.events)


async def replay_all(histories: list[WorkflowHistory]) -> None:
    replayer = Replayer(workflows=ALL_WORKFLOWS, data_converter=pydantic_data_converter)
    for history in histories:
        await replayer.replay_workflow(history)


def closed_as(history: WorkflowHistory) -> HistoryEventType.ValueType:
    return history.events[-1].event_type


CONTINUED = HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW


async def test_a_300_turn_run_crosses_continue_as_new_and_its_record_is_complete(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"count to three hundred {run_id}"
    model_server.script(
        prompt,
        [
            *(
                Reply(tool_calls=[ToolCallSpec("calculator", {"expression": f"{n}+1"}, id=f"c{n}")])
                for n in range(TURNS - 1)
            ),
            Reply(text="Counted to three hundred."),
        ],
    )
    client = AgentRunClient(temporal_env.client, settings.task_queue, store=repo)
    run = await client.start(
        prompt,
        run_id=run_id,
        config={
            "tools": ["calculator"],
            "max_turns": TURNS,
            "max_tool_calls": TURNS,
            "continue_as_new_after_turns": EVERY,
            "flush_interval_ms": 0,
        },
    )
    result = await asyncio.wait_for(run.result(), 600)
    assert result.status == RunStatus.DONE
    assert result.final_text == "Counted to three hundred."

    # The chain: one execution per EVERY turns, each continued but the last, each small.
    histories = await run_histories(temporal_env.client, run_id)
    assert len(histories) == -(-TURNS // EVERY)
    assert [closed_as(h) == CONTINUED for h in histories] == [True] * (len(histories) - 1) + [False]
    sizes = [(len(h.events), history_bytes(h)) for h in histories]
    assert all(events <= MAX_EVENTS and size <= MAX_BYTES for events, size in sizes), sizes
    # The bound means something: the whole run would not fit under it in one execution.
    assert sum(events for events, _ in sizes) > 5 * MAX_EVENTS, sizes
    await replay_all(histories)

    # The record: every turn, model call and tool call once, the event log gapless.
    messages = await repo.run_messages(run_id)
    assistant = [m for m in messages if m.role == "assistant"]
    assert [m.turn for m in assistant] == list(range(1, TURNS + 1))
    assert await count(repo, Message, run_id=run_id, role="tool") == TURNS - 1
    llm_calls = await run_llm_calls(repo, run_id)
    assert sorted(c.turn for c in llm_calls) == list(range(1, TURNS + 1))
    tool_calls = await run_tool_calls(repo, run_id)
    assert sorted(c.tool_call_id for c in tool_calls) == sorted(f"c{n}" for n in range(TURNS - 1))
    assert all(c.status == "succeeded" for c in tool_calls), {c.status for c in tool_calls}
    events = await repo.read_events(run_id, 0, limit=100_000)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    statuses = [e.data["status"] for e in events if e.type == EventType.RUN_STATUS]
    assert statuses == ["QUEUED", "RUNNING", "DONE"]  # no second open, no status moved back

    # Usage: the record, the result and the last execution's query agree.
    record = await repo.get_run(run_id)
    assert (record.turns, record.llm_call_count, record.tool_call_count) == (
        TURNS,
        TURNS,
        TURNS - 1,
    )
    assert record.prompt_tokens == sum(c.prompt_tokens or 0 for c in llm_calls)
    view = await run_status(temporal_env.client, run_id)
    assert view.usage == result.usage
    assert view.turn == TURNS and view.status == RunStatus.DONE
    assert result.usage.turns == TURNS and result.usage.tool_calls == TURNS - 1
    assert result.usage.prompt_tokens == record.prompt_tokens > 0

    # Temporal's view: one run listed, its search attributes current, the result by workflow id.
    desc = await run.describe()
    assert desc.status == WorkflowExecutionStatus.COMPLETED
    assert desc.typed_search_attributes.get(SA_RUN_STATUS) == RunStatus.DONE.value
    assert desc.typed_search_attributes.get(SA_MODEL) == "offline-scripted"
    assert desc.typed_search_attributes.get(SA_SESSION_ID) == record.session_id

    async def listed_once() -> bool:
        listed = await client.list_runs(session_id=record.session_id)
        return [(r.run_id, r.status) for r in listed] == [(run_id, RunStatus.DONE.value)]

    await until(listed_once, timeout=30)  # visibility catches up within that
    assert (await run_result(temporal_env.client, run_id)).usage == result.usage


@pytest.fixture
def bash_workspace(tmp_path: Path) -> str:
    return str(tmp_path)


async def pending_call(client: AgentRunClient, run_id: str, call_id: str) -> Any:
    async def waiting() -> Any:
        view = await client.handle(run_id).status()
        return next((p for p in view.pending if p.tool_call_id == call_id), None)

    return await until(waiting)


async def test_approvals_and_an_early_decision_cross_a_boundary(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    bash_workspace: str,
) -> None:
    """One turn per execution: call a is approved by update in execution 1, call b by a signal
    sent before it existed (carried to execution 2), call c by update in execution 3 through
    the handle start returned; a second decision of a (decided two executions before) is
    refused as already decided."""
    prompt = f"approvals across {run_id}"
    model_server.script(
        prompt,
        [
            bash_call("echo a", "call_a"),
            bash_call("echo b", "call_b"),
            bash_call("echo c", "call_c"),
            Reply(text="Ran a, b and c."),
        ],
    )
    client = AgentRunClient(temporal_env.client, settings.task_queue, store=repo)
    run = await client.start(
        prompt,
        run_id=run_id,
        config={"tools": ["bash"], "continue_as_new_after_turns": 1, "workspace": bash_workspace},
    )
    a = await pending_call(client, run_id, "call_a")
    await run.signal_decision(
        "call_b",
        "approve",
        arguments_sha256=arguments_sha256(json.dumps({"command": "echo b"})),
        decided_by="early",
    )
    recorded = await run.decide(
        "call_a", "approve", arguments_sha256=a.arguments_sha256, decided_by="alice"
    )
    assert recorded.decided_by == "alice"
    c = await pending_call(client, run_id, "call_c")
    with pytest.raises(AlreadyDecided):
        await run.decide("call_a", "reject", decided_by="late")
    await run.decide("call_c", "approve", arguments_sha256=c.arguments_sha256, decided_by="bob")
    result = await asyncio.wait_for(run.result(), 60)
    assert result.status == RunStatus.DONE and result.final_text == "Ran a, b and c."

    calls = {c.tool_call_id: c for c in await run_tool_calls(repo, run_id)}
    assert {k: (c.decided_by, c.status) for k, c in calls.items()} == {
        "call_a": ("alice", "succeeded"),
        "call_b": ("early", "succeeded"),
        "call_c": ("bob", "succeeded"),
    }
    histories = await run_histories(temporal_env.client, run_id)
    assert len(histories) == 4  # turns 1, 2, 3 each then continued; turn 4 answers
    await replay_all(histories)


async def test_a_cancel_after_a_boundary_cancels_the_run(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    bash_workspace: str,
) -> None:
    """Cancelled while it waits in its second execution: CANCELED everywhere, the cancel
    update answered, the result (from the memo of the last execution) by workflow id."""
    prompt = f"cancel across {run_id}"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("calculator", {"expression": "1+1"}, id="c1")]),
            bash_call("echo never", "call_x"),
            Reply(text="never"),
        ],
    )
    client = AgentRunClient(temporal_env.client, settings.task_queue, store=repo)
    run = await client.start(
        prompt,
        run_id=run_id,
        config={
            "tools": ["calculator", "bash"],
            "continue_as_new_after_turns": 1,
            "workspace": bash_workspace,
        },
    )
    await pending_call(client, run_id, "call_x")
    # The second execution shows what it does as the first did.
    view = await run.status()
    assert (view.turn, view.usage.turns, view.status) == (2, 2, RunStatus.WAITING_APPROVAL)
    sa = (await run.describe()).typed_search_attributes
    assert sa.get(SA_RUN_STATUS) == RunStatus.WAITING_APPROVAL.value
    assert sa.get(SA_WAITING_APPROVAL) is True and sa.get(SA_MODEL) == "offline-scripted"
    answer = await run.cancel(reason="enough", requested_by="carol")
    assert answer.status == RunStatus.CANCELED
    result = await asyncio.wait_for(run.result(), 60)
    assert result.status == RunStatus.CANCELED and result.error == "cancelled by carol: enough"
    assert (await repo.get_run(run_id)).status == RunStatus.CANCELED.value
    histories = await run_histories(temporal_env.client, run_id)
    assert len(histories) == 2 and closed_as(histories[0]) == CONTINUED
    assert (await run.describe()).status == WorkflowExecutionStatus.CANCELED
    await replay_all(histories)


async def test_a_carry_from_outside_the_run_is_refused(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    """A finished run's id started again by hand with a carry (as if continued) is refused
    before anything is written, as is a carry on a new run id."""
    prompt = f"forged carry {run_id}"
    model_server.script(prompt, [Reply(text="Done once.")])
    inp = start_input(run_id, prompt, tools=[])
    done = await temporal_env.client.execute_workflow(
        AgentRunWorkflow.run, inp, id=run_id, task_queue=settings.task_queue
    )
    assert done.status == RunStatus.DONE
    seq = (await repo.get_run(run_id)).last_event_seq
    carry = RunCarry(opened=OpenedRun(run_id=run_id, model="offline-scripted"), turn=1)
    for rid, data in ((run_id, inp), (f"run-{uuid.uuid4()}", None)):
        forged = (data or start_input(rid, prompt, tools=[])).model_copy(update={"carry": carry})
        with pytest.raises(WorkflowFailureError) as failed:
            await temporal_env.client.execute_workflow(
                AgentRunWorkflow.run,
                forged,
                id=rid,
                task_queue=settings.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            )
        assert failed.value.cause.type == ErrorType.RUN_REFUSED  # type: ignore[attr-defined]
        assert "only taken over by its own continue-as-new" in str(failed.value.cause)
    record = await repo.get_run(run_id)
    assert (record.status, record.last_event_seq) == (RunStatus.DONE.value, seq)
    with pytest.raises(RunRefused):
        await run_result(temporal_env.client, run_id)


async def test_the_store_lets_only_the_chain_that_opened_a_run_resume_it(
    repo: Repository, run_id: str
) -> None:
    session_id = f"s-{uuid.uuid4()}"
    inp = start_input(run_id, "resume me", session_id)
    await repo.open_run(
        run_id=run_id,
        session_id=session_id,
        model="m",
        config=inp.config,
        prompt=inp.prompt,
        workflow_run_id="first-exec",
    )
    assert (await repo.resume_run(run_id, "first-exec")).workflow_run_id == "first-exec"
    with pytest.raises(RunOwnedError):
        await repo.resume_run(run_id, "another-chain")
    await repo.set_run_status(run_id, RunStatus.DONE)
    with pytest.raises(RunEndedError):
        await repo.resume_run(run_id, "first-exec")
    assert await count(repo, LlmCall, run_id=run_id) == 0
    assert await count(repo, ToolCall, run_id=run_id) == 0


def test_start_input_is_unchanged_without_a_carry() -> None:
    inp = StartRunInput(run_id="r", session_id="s", prompt="p")
    assert inp.carry is None and inp.config.continue_as_new_after_turns == 100


async def test_a_run_continues_when_temporal_suggests_it(
    settings: Settings, repo: Repository, model_server: OfflineModelServer, run_id: str
) -> None:
    """With continue_as_new_after_turns None, only Temporal's suggestion continues a run: here
    a dev server of its own that suggests it past 60 events (about five turns)."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        data_converter=pydantic_data_converter,
        search_attributes=search_attribute_keys(),
        dev_server_log_level="error",
        dev_server_extra_args=[
            "--dynamic-config-value",
            "limit.historyCount.suggestContinueAsNew=60",
        ],
    )
    try:
        async with build_worker(env.client, settings, repo, graceful_shutdown=timedelta(seconds=1)):
            prompt = f"suggested {run_id}"
            turns = 16
            model_server.script(
                prompt,
                [
                    *(
                        Reply(
                            tool_calls=[ToolCallSpec("calculator", {"expression": "1"}, id=f"s{n}")]
                        )
                        for n in range(turns - 1)
                    ),
                    Reply(text="Suggested enough."),
                ],
            )
            inp = start_input(
                run_id,
                prompt,
                tools=["calculator"],
                max_turns=turns,
                continue_as_new_after_turns=None,
            )
            result = await env.client.execute_workflow(
                AgentRunWorkflow.run, inp, id=run_id, task_queue=settings.task_queue
            )
            assert result.status == RunStatus.DONE and result.usage.turns == turns
            histories = await run_histories(env.client, run_id)
            assert len(histories) >= 2
            # Each execution went on until Temporal suggested it, then one turn at most.
            assert all(len(h.events) <= 60 + 15 for h in histories), [
                len(h.events) for h in histories
            ]
            await replay_all(histories)
    finally:
        await env.shutdown()
