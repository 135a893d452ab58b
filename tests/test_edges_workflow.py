"""Adversarial cases at the workflow's edges (issue 9): a model that calls a tool the run did not
enable, a closed run id started again, a cancel while the run is being opened, a failing call
with siblings still running, early approvals nobody can check, and oversized client results.

Each test drives the real workflow on the dev server against the real store; where a step has
to be held still (opening the run), a stand-in is registered under the real activity name.
"""

from __future__ import annotations

import ast
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

import starter.api as api
from activities.runs import RunActivities
from activities.tools import default_registry
from agentrun.contracts import (
    AgentConfig,
    CancelAnswer,
    CancelRequest,
    ClientTool,
    OpenedRun,
    OpenRunInput,
    RunResult,
)
from agentrun.db.models import Message
from agentrun.protocol.events import EventType, arguments_sha256
from agentrun.protocol.names import Activity
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from tests.conftest import bash_call, next_event, start_input
from tests.store_helpers import count, run_tool_calls
from workflows import ALL_WORKFLOWS
from workflows import options as options_module
from workflows.agent import AgentRunWorkflow

WORKFLOW_SOURCES = sorted((Path(__file__).resolve().parent.parent / "workflows").glob("*.py"))


async def start(
    env: WorkflowEnvironment,
    settings: Settings,
    run_id: str,
    prompt: str,
    session_id: str | None = None,
    **config: Any,
) -> WorkflowHandle[AgentRunWorkflow, RunResult]:
    return await env.client.start_workflow(
        AgentRunWorkflow.run,
        start_input(run_id, prompt, session_id=session_id, **config),
        id=run_id,
        task_queue=settings.task_queue,
    )


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 60) -> Any:
    """The first truthy value of `check`, polled until `timeout` (then the test fails)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)


async def assert_replays(handle: WorkflowHandle[Any, Any]) -> None:
    """The run's own history replays against the code that wrote it: the new paths (patched
    or not) are deterministic, so a worker restart in the middle of one does not strand it."""
    replayer = Replayer(workflows=ALL_WORKFLOWS, data_converter=pydantic_data_converter)
    await replayer.replay_workflow(await handle.fetch_history())


def args_sha(arguments: dict[str, Any]) -> str:
    """The hash the run announces for arguments the offline model sends as json.dumps."""
    return arguments_sha256(json.dumps(arguments))


def bookkeeping_worker(
    env: WorkflowEnvironment, settings: Settings, repo: Repository, prepare: Callable[..., Any]
) -> tuple[Worker, RunActivities]:
    """A worker with the real workflow, a stand-in for agentrun.prepare_run and the real
    bookkeeping activities (enough for a run that never reaches a model turn)."""
    runs = RunActivities(repo, settings, default_registry())
    worker = Worker(
        env.client,
        task_queue=settings.task_queue,
        workflows=ALL_WORKFLOWS,
        activities=[
            prepare,
            runs.set_status,
            runs.request_waits,
            runs.record_decision,
            runs.append_event,
            runs.request_cancel,
        ],
        graceful_shutdown_timeout=timedelta(seconds=1),
    )
    return worker, runs


# -- item 1: a tool the run did not enable ----------------------------------------------------


async def test_a_call_to_a_tool_the_run_did_not_enable_is_an_error_never_run(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "pwned"
    prompt = f"injected {run_id}"
    model_server.script(prompt, [bash_call(f"touch {marker}"), Reply(text="Could not run it.")])
    handle = await start(
        temporal_env,
        settings,
        run_id,
        prompt,
        tools=["calculator"],
        approval="require_all",
        workspace=str(tmp_path),
    )
    result = await asyncio.wait_for(handle.result(), 60)
    assert result.status == "DONE"
    assert not marker.exists(), "a tool the run did not enable ran"
    call = await repo.get_tool_call(run_id, "call_bash")
    assert (call.status, call.is_error, call.decision, call.attempts) == ("error", True, None, 0)
    assert (call.result or "").startswith("error: tool 'bash' is not enabled for this run")
    assert "calculator" in (call.result or "")
    events = await repo.read_events(run_id, 0, limit=10_000)
    assert not [e for e in events if e.type == EventType.TOOL_APPROVAL_REQUESTED]
    results = [e for e in events if e.type == EventType.TOOL_RESULT]
    assert [(e.data["tool_call_id"], e.data["is_error"]) for e in results] == [("call_bash", True)]
    assert "not enabled" in results[0].data["result"]
    await assert_replays(handle)


# -- item 2: a closed run id started again ----------------------------------------------------


async def test_a_closed_run_id_started_again_is_refused_and_changes_nothing(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    client = temporal_env.client
    session = f"s-{uuid.uuid4()}"
    marker = tmp_path / "ran"
    prompt = f"restart me {run_id}"
    model_server.script(prompt, [bash_call(f"touch {marker}"), Reply(text="Ran it after all.")])
    first = await start(temporal_env, settings, run_id, prompt, session, workspace=str(tmp_path))
    await next_event(repo, run_id, EventType.TOOL_APPROVAL_REQUESTED)
    assert (await api.cancel_run(client, run_id, reason="not this")).status == "CANCELED"
    with pytest.raises(WorkflowFailureError) as cancelled:
        await first.result()  # a cancelled run's workflow closes as Canceled
    assert isinstance(cancelled.value.cause, CancelledError)

    # Through the API: a closed id is refused with a clear, typed error (with or without a repo).
    for repo_arg in (None, repo):
        with pytest.raises(api.RunAlreadyEndedError) as ended:
            await api.start_run(
                client,
                settings.task_queue,
                prompt,
                session_id=session,
                run_id=run_id,
                repo=repo_arg,
            )
        assert f"run {run_id!r} already ended (CANCELED); start a new run id" in str(ended.value)

    other = f"run-{uuid.uuid4()}"
    model_server.script(f"other {other}", [Reply(text="The other run.")])
    took = await start(temporal_env, settings, other, f"other {other}", session, tools=[])
    assert (await took.result()).status == "DONE"
    messages = await count(repo, Message, session_id=session)

    # An old client: the same id again with a permissive reuse policy. Approve whatever the new
    # execution asks, as whoever restarted it would.
    again = await client.start_workflow(
        AgentRunWorkflow.run,
        start_input(run_id, prompt, session_id=session, workspace=str(tmp_path)),
        id=run_id,
        task_queue=settings.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )

    async def closed_after_approving_everything() -> bool:
        if (await again.describe()).status != WorkflowExecutionStatus.RUNNING:
            return True
        for p in (await again.query(AgentRunWorkflow.status)).pending:
            try:
                await api.decide(client, run_id, p.tool_call_id, "approve", decided_by="intruder")
            except WorkflowUpdateFailedError:
                pass
        return False

    await until(closed_after_approving_everything)
    with pytest.raises(WorkflowFailureError) as info:
        await again.result()
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "RunRefused", cause
    assert f"run {run_id!r} already ended (CANCELED)" in cause.message
    assert not marker.exists(), "the cancelled call ran"
    run = await repo.get_run(run_id)
    assert run.status == "CANCELED"
    assert await count(repo, Message, session_id=session) == messages
    assert (await repo.get_tool_call(run_id, "call_bash")).decision is None

    # Through the API again: still refused, with the run's recorded status.
    with pytest.raises(api.RunAlreadyEndedError) as ended:
        await api.start_run(
            client, settings.task_queue, prompt, session_id=session, run_id=run_id, repo=repo
        )
    assert "already ended (CANCELED)" in str(ended.value)
    await assert_replays(again)


async def test_a_run_opened_by_another_execution_is_refused(
    repo: Repository, settings: Settings, temporal_env: WorkflowEnvironment, run_id: str
) -> None:
    """The second guard alone: the row remembers the execution that opened it."""
    await repo.open_run(
        run_id=run_id,
        session_id=f"s-{uuid.uuid4()}",
        model="m",
        config=AgentConfig(),
        prompt="opened elsewhere",
        workflow_run_id="an-earlier-execution",
    )
    runs = RunActivities(repo, settings, default_registry())

    refused = []

    @activity.defn(name=Activity.PREPARE_RUN)
    async def prepare_run(inp: OpenRunInput) -> OpenedRun:
        try:
            return await runs.open_run(inp)
        except ApplicationError as exc:
            refused.append(exc)
            raise

    w, _ = bookkeeping_worker(temporal_env, settings, repo, prepare_run)
    async with w:
        run = await repo.get_run(run_id)
        handle = await start(temporal_env, settings, run_id, "again", run.session_id)
        with pytest.raises(WorkflowFailureError) as info:
            await asyncio.wait_for(handle.result(), 60)
    assert "was opened by another execution" in str(info.value.cause)
    assert [e.non_retryable for e in refused] == [True]
    assert (await repo.get_run(run_id)).status == "QUEUED"


# -- item 7 (workflow side): bounded bookkeeping, data errors do not retry ---------------------


def test_every_activity_call_in_the_workflow_is_bounded() -> None:
    """The workflow schedules activities only through workflows/steps.py, each with one of the
    options objects of workflows/options.py (or its own schedule-to-close bound), and every
    options object has a schedule-to-close bound."""
    schedules = {
        "execute_activity",
        "execute_local_activity",
        "start_activity",
        "start_local_activity",
        "execute_activity_method",
        "execute_local_activity_method",
        "start_activity_method",
        "start_local_activity_method",
    }
    unbounded, elsewhere = [], []
    for source in WORKFLOW_SOURCES:
        for node in ast.walk(ast.parse(source.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in schedules
            ):
                continue
            # webhook.py, retention.py and session.py are workflow types of their own (a
            # delivery, a retention sweep, a session's queue), with their own bounded calls.
            if source.name not in ("steps.py", "webhook.py", "retention.py", "session.py"):
                elsewhere.append(f"{source.name}:{node.lineno}")
            keys = {k.arg for k in node.keywords}
            if "schedule_to_close_timeout" not in keys and None not in keys:
                unbounded.append(f"{source.name}:{node.lineno}")
    assert not unbounded, unbounded
    assert not elsewhere, elsewhere
    config = AgentConfig()
    for options in (
        options_module.BOOKKEEPING,
        options_module.RECORD_OUTCOME,
        options_module.model_turn_options(config),
        options_module.tool_run_options(None, config),
    ):
        assert options.get("schedule_to_close_timeout") is not None
    for options in (options_module.BOOKKEEPING, options_module.RECORD_OUTCOME):
        assert "DataError" in options["retry_policy"].non_retryable_error_types


async def test_a_data_error_while_opening_is_not_retried(
    temporal_env: WorkflowEnvironment, settings: Settings, repo: Repository, run_id: str
) -> None:
    attempts = []

    class DataError(Exception):
        """Named like the database driver's error for values the database cannot store."""

    @activity.defn(name=Activity.PREPARE_RUN)
    async def prepare_run(inp: OpenRunInput) -> OpenedRun:
        attempts.append(activity.info().attempt)
        if len(attempts) > 1:  # retried: stop here rather than retry for the whole deadline
            raise ApplicationError("retried a data error", non_retryable=True)
        raise DataError("A string literal cannot contain NUL (0x00) characters.")

    w, _ = bookkeeping_worker(temporal_env, settings, repo, prepare_run)
    async with w:
        handle = await start(temporal_env, settings, run_id, "a NUL somewhere")
        with pytest.raises(WorkflowFailureError) as info:
            await asyncio.wait_for(handle.result(), 30)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "RunRefused"
    assert "NUL" in cause.message
    assert attempts == [1]


# -- item 14: cancel while the run is being opened --------------------------------------------


async def test_a_temporal_cancel_while_the_run_opens_ends_it_canceled(
    temporal_env: WorkflowEnvironment, settings: Settings, repo: Repository, run_id: str
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    holder: list[RunActivities] = []

    @activity.defn(name=Activity.PREPARE_RUN)
    async def prepare_run(inp: OpenRunInput) -> OpenedRun:
        started.set()
        await release.wait()
        return await holder[0].open_run(inp)

    w, runs = bookkeeping_worker(temporal_env, settings, repo, prepare_run)
    holder.append(runs)
    async with w:
        handle = await start(temporal_env, settings, run_id, "cancel me while I open", tools=[])
        await asyncio.wait_for(started.wait(), 30)
        await handle.cancel()

        async def cancel_seen() -> bool:
            if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                return True
            return (await handle.query(AgentRunWorkflow.status)).cancel_requested

        await until(cancel_seen)
        release.set()
        with pytest.raises(WorkflowFailureError) as info:
            await asyncio.wait_for(handle.result(), 60)
    assert isinstance(info.value.cause, CancelledError), info.value.cause
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    run = await repo.get_run(run_id)
    assert run.status == "CANCELED" and run.error == "cancelled through Temporal"
    await assert_replays(handle)


async def test_a_cancel_update_while_the_run_cannot_open_gets_its_answer(
    temporal_env: WorkflowEnvironment, settings: Settings, repo: Repository, run_id: str
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    attempts = []

    @activity.defn(name=Activity.PREPARE_RUN)
    async def prepare_run(inp: OpenRunInput) -> OpenedRun:
        attempts.append(activity.info().attempt)
        started.set()
        if not release.is_set():
            # The database is down: a retryable error, again and again.
            raise ConnectionError("connection refused")
        raise ApplicationError("the database stayed down", type="Unavailable", non_retryable=True)

    w, _ = bookkeeping_worker(temporal_env, settings, repo, prepare_run)
    async with w:
        handle = await start(temporal_env, settings, run_id, "cancel me while I cannot open")
        await asyncio.wait_for(started.wait(), 30)
        update = await handle.start_update(
            "cancel",
            CancelRequest(reason="never mind"),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            result_type=CancelAnswer,
        )
        release.set()
        answer = await asyncio.wait_for(update.result(), 60)
        with pytest.raises(WorkflowFailureError) as info:
            await asyncio.wait_for(handle.result(), 60)
    assert answer.status == "FAILED" and "the database stayed down" in answer.message
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "RunRefused"
    assert len(attempts) >= 2
    await assert_replays(handle)


# -- item 16: a failing call's siblings are cancelled and recorded -----------------------------


async def test_a_failing_call_cancels_and_records_its_running_sibling(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    # Found by its command line, not its pid: in the sandbox's PID namespace $$ is 1.
    marker = f"30.{uuid.uuid4().int % 10**9:09d}"
    slow = {"command": f"echo started > started; sleep {marker}; echo finished"}
    prompt = f"siblings {run_id}"
    model_server.script(
        prompt,
        [
            Reply(
                tool_calls=[
                    ToolCallSpec("bash", slow, id="call_slow"),
                    ToolCallSpec("bash", {"command": "echo never"}, id="call_wait"),
                ],
                first_token_delay_s=0.5,
            ),
            Reply(text="never reached"),
        ],
    )
    handle = await start(
        temporal_env,
        settings,
        run_id,
        prompt,
        approval_timeout_s=5,
        approval_timeout_action="fail",
        workspace=str(tmp_path),
    )
    # Approved ahead of time, bound to its arguments: the slow call starts as soon as it exists.
    await handle.signal(
        "tool_decision",
        {
            "tool_call_id": "call_slow",
            "decision": "approve",
            "arguments_sha256": args_sha(slow),
            "decided_by": "early",
        },
    )
    with pytest.raises(WorkflowFailureError) as info:
        await asyncio.wait_for(handle.result(), 25)
    assert "timed out" in str(info.value.cause)
    assert (await repo.get_run(run_id)).status == "FAILED"
    calls = {c.tool_call_id: c for c in await run_tool_calls(repo, run_id)}
    assert calls["call_slow"].decision == "approve"
    for call in calls.values():
        assert (call.status, call.is_error) == ("error", True), (call.tool_call_id, call.status)
        assert (call.result or "").startswith("cancelled: the run failed"), call.result
    if (tmp_path / "started").exists():
        await until(lambda: _gone(marker), 15)
    events = await repo.read_events(run_id, 0, limit=10_000)
    assert events[-1].type == EventType.RUN_STATUS and events[-1].data["status"] == "FAILED"
    await assert_replays(handle)


async def _gone(marker: str) -> bool:
    """No process on this machine has `marker` on its command line."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                return False
        except OSError:
            continue  # the process ended meanwhile
    return True


# -- item 17: early decisions and client results -----------------------------------------------


async def test_early_approvals_must_carry_the_arguments_hash_and_are_bounded(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    a, b, c = ({"command": f"echo {x}"} for x in "abc")
    prompt = f"early {run_id}"
    model_server.script(
        prompt,
        [
            Reply(
                tool_calls=[
                    ToolCallSpec("bash", a, id="call_a"),
                    ToolCallSpec("bash", b, id="call_b"),
                    ToolCallSpec("bash", c, id="call_c"),
                ],
                first_token_delay_s=3,
            ),
            Reply(text="All three handled."),
        ],
    )
    handle = await start(temporal_env, settings, run_id, prompt, workspace=str(tmp_path))

    async def early(call_id: str, **extra: Any) -> None:
        await handle.signal(
            "tool_decision",
            {"tool_call_id": call_id, "decision": "approve", "decided_by": "early", **extra},
        )

    await early("call_c", arguments_sha256=args_sha(c))  # bound to its arguments: kept
    await early("call_a")  # no hash: it cannot be checked against a call nobody has seen
    for n in range(62):
        await early(f"junk-{n}")  # the run keeps at most 64 early decisions
    await early("call_b", arguments_sha256=args_sha(b))  # one too many: dropped
    view = await handle.query(AgentRunWorkflow.status)
    assert view.phase == "model" and not view.pending, "the calls appeared before the signals"

    invalid = await next_event(repo, run_id, EventType.TOOL_DECISION_INVALID)
    assert invalid.data["tool_call_id"] == "call_a"
    assert "arguments_sha256" in invalid.data["error"]
    view = await until(lambda: _pending(handle, 2))
    assert sorted(p.tool_call_id for p in view.pending) == ["call_a", "call_b"]
    for call_id in ("call_a", "call_b"):
        await api.decide(temporal_env.client, run_id, call_id, "approve", decided_by="alice")
    assert (await asyncio.wait_for(handle.result(), 60)).status == "DONE"
    calls = {x.tool_call_id: x for x in await run_tool_calls(repo, run_id)}
    assert {k: v.decided_by for k, v in calls.items()} == {
        "call_a": "alice",
        "call_b": "alice",
        "call_c": "early",
    }
    await assert_replays(handle)


async def _pending(handle: WorkflowHandle[Any, Any], n: int) -> Any:
    view = await handle.query(AgentRunWorkflow.status)
    return view if len(view.pending) == n else None


async def test_a_client_result_over_the_cap_is_refused_and_changes_nothing(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    from agentrun.contracts import RESULT_CAP

    prompt = f"big result {run_id}"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("lookup", {"q": "all"}, id="call_l")]),
            Reply(text="Got a small one."),
        ],
    )
    lookup = ClientTool(name="lookup", parameters={"type": "object"})
    handle = await start(
        temporal_env, settings, run_id, prompt, tools=[], client_tools=[lookup.model_dump()]
    )
    await next_event(repo, run_id, EventType.TOOL_RESULT_REQUESTED)
    client = temporal_env.client
    oversized: Sequence[Any] = ({"blob": "x" * 1_200_000}, "y" * (RESULT_CAP + 1))
    for big in oversized:
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await asyncio.wait_for(api.submit_tool_result(client, run_id, "call_l", big), 60)
        assert f"the limit is {RESULT_CAP}" in str(info.value.cause)
    view = await handle.query(AgentRunWorkflow.status)
    assert [p.tool_call_id for p in view.pending] == ["call_l"]
    assert (await repo.get_tool_call(run_id, "call_l")).result is None
    assert await api.submit_tool_result(client, run_id, "call_l", "y" * RESULT_CAP) == "accepted"
    assert (await asyncio.wait_for(handle.result(), 60)).status == "DONE"
    assert len((await repo.get_tool_call(run_id, "call_l")).result or "") == RESULT_CAP
    await assert_replays(handle)
