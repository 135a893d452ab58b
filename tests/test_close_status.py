"""Issue 11, items 9 and 7: Temporal's close status is the run's own status, everywhere a run
can end. DONE closes Completed, FAILED (a model error, an approval that timed out with action
fail, a run refused at open) closes Failed, CANCELED (by the cancel update, the cancel signal or
Temporal's own cancel; while streaming or waiting for approval) closes Canceled. For each: the
execution status, the AgentRunStatus search attribute, the record and the client's view agree,
the cancel update still gets its answer, and the history replays.

Runs are started through agentrun.client, as the CLI starts them: the client publishes
AgentRunStatus=QUEUED at start, so a refusal that published nothing would stay QUEUED.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from agentrun.client import RunFailed, RunHandle, RunRefused, cancel_run, start_run
from agentrun.contracts import CancelAnswer, CancelRequest, OpenedRun, OpenRunInput, RunResult
from agentrun.protocol.events import EventType
from agentrun.protocol.names import SA_RUN_STATUS, Activity, ErrorType, Signal
from agentrun.protocol.statuses import RunStatus
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.testing.offline_model import Fault, OfflineModelServer, Reply
from tests.conftest import bash_call, next_event
from tests.test_edges_workflow import bookkeeping_worker
from worker import build_worker, connect_client
from workflows import ALL_WORKFLOWS

CLOSES_AS = {
    RunStatus.DONE: WorkflowExecutionStatus.COMPLETED,
    RunStatus.FAILED: WorkflowExecutionStatus.FAILED,
    RunStatus.CANCELED: WorkflowExecutionStatus.CANCELED,
}


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)


async def closed(handle: WorkflowHandle[Any, Any]) -> WorkflowExecutionStatus:
    async def status() -> WorkflowExecutionStatus | None:
        s = (await handle.describe()).status
        return None if s in (None, WorkflowExecutionStatus.RUNNING) else s

    return await until(status)


async def assert_closed_as(
    run: RunHandle, repo: Repository, status: RunStatus, *, recorded: bool = True
) -> None:
    """Temporal's close status, the published AgentRunStatus and the record all say `status`,
    and the history replays against the current code."""
    assert await closed(run.workflow) == CLOSES_AS[status]
    desc = await run.describe()
    assert desc.typed_search_attributes.get(SA_RUN_STATUS) == status.value
    record = await repo.find_run(run.id)
    if recorded:
        assert record is not None and record.status == status.value
    else:
        assert record is None
    replayer = Replayer(workflows=ALL_WORKFLOWS, data_converter=pydantic_data_converter)
    await replayer.replay_workflow(await run.workflow.fetch_history())


async def _start(
    env: WorkflowEnvironment,
    settings: Settings,
    prompt: str,
    *,
    session_id: str | None = None,
    **config: Any,
) -> RunHandle:
    return await start_run(
        env.client,
        settings.task_queue,
        prompt,
        session_id=session_id,
        run_id=f"run-{uuid.uuid4()}",
        config=config,
    )


# -- DONE and FAILED ---------------------------------------------------------------------------


async def test_a_done_run_closes_completed(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    prompt = f"done {uuid.uuid4()}"
    model_server.script(prompt, [Reply(text="All done.")])
    run = await _start(temporal_env, settings, prompt, tools=[])
    assert (await asyncio.wait_for(run.result(), 60)).status == RunStatus.DONE
    await assert_closed_as(run, repo, RunStatus.DONE)


@pytest.mark.parametrize(
    ("faults", "config"),
    [
        ([Fault("http", 400, "Invalid value for 'temperature'.")], {}),
        # Retryable errors until the model budget is spent.
        ([Fault("http", 500), Fault("http", 500), Reply(text="never")], {"model_max_attempts": 2}),
    ],
    ids=["http-400", "attempts-exhausted"],
)
async def test_a_model_error_closes_failed(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    faults: list[Any],
    config: dict[str, Any],
) -> None:
    prompt = f"bad model {uuid.uuid4()}"
    model_server.script(prompt, faults)
    run = await _start(temporal_env, settings, prompt, tools=[], **config)
    with pytest.raises(RunFailed) as info:
        await asyncio.wait_for(run.result(), 60)
    assert info.value.error_type == "RunFailed"
    await assert_closed_as(run, repo, RunStatus.FAILED)


async def test_an_approval_timeout_with_action_fail_closes_failed(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    prompt = f"late {uuid.uuid4()}"
    model_server.script(prompt, [bash_call("echo late"), Reply(text="never")])
    run = await _start(
        temporal_env, settings, prompt, approval_timeout_s=1, approval_timeout_action="fail"
    )
    with pytest.raises(RunFailed) as info:
        await asyncio.wait_for(run.result(), 60)
    assert info.value.error_type == "ApprovalTimeout"
    await assert_closed_as(run, repo, RunStatus.FAILED)


async def test_a_run_refused_for_a_busy_session_closes_failed_and_is_not_left_queued(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    session = f"s-{uuid.uuid4()}"
    prompt = f"holds the session {session}"
    model_server.script(prompt, [bash_call("echo hold"), Reply(text="released")])
    holder = await _start(temporal_env, settings, prompt, session_id=session)
    await next_event(repo, holder.id, EventType.TOOL_APPROVAL_REQUESTED)
    # Without the store the client cannot refuse early: the workflow refuses at open.
    refused = await _start(temporal_env, settings, "the same session", session_id=session)
    with pytest.raises(RunRefused):
        await asyncio.wait_for(refused.result(), 60)
    await assert_closed_as(refused, repo, RunStatus.FAILED, recorded=False)
    await cancel_run(temporal_env.client, holder.id, reason="done with it")


async def test_a_config_the_worker_refuses_closes_failed_and_is_not_left_queued(
    temporal_env: WorkflowEnvironment, settings: Settings, worker: Worker, repo: Repository
) -> None:
    run = await _start(temporal_env, settings, "bad tools", tools=["calculator", "nosuch"])
    with pytest.raises(RunRefused) as info:
        await asyncio.wait_for(run.result(), 60)
    assert "nosuch" in str(info.value)
    await assert_closed_as(run, repo, RunStatus.FAILED, recorded=False)


async def test_a_refused_run_closes_failed_even_after_a_temporal_cancel(
    temporal_env: WorkflowEnvironment, settings: Settings, repo: Repository
) -> None:
    """A Temporal cancel while the run is being opened, then a refusal: the run is FAILED (it
    never ran), so the workflow fails rather than closing as Canceled."""
    started, release = asyncio.Event(), asyncio.Event()

    @activity.defn(name=Activity.PREPARE_RUN)
    async def prepare_run(inp: OpenRunInput) -> OpenedRun:
        started.set()
        await release.wait()
        raise ApplicationError("no such tool", type=ErrorType.INVALID_CONFIG, non_retryable=True)

    w, _ = bookkeeping_worker(temporal_env, settings, repo, prepare_run)
    async with w:
        run = await _start(temporal_env, settings, "cancelled, then refused")
        await asyncio.wait_for(started.wait(), 30)
        await run.workflow.cancel()

        async def cancel_seen() -> bool:
            return (await run.status()).cancel_requested

        await until(cancel_seen)
        release.set()
        with pytest.raises(RunRefused):
            await asyncio.wait_for(run.result(), 60)
        await assert_closed_as(run, repo, RunStatus.FAILED, recorded=False)


# -- CANCELED ----------------------------------------------------------------------------------


async def _waiting_run(
    env: WorkflowEnvironment, settings: Settings, repo: Repository, model: OfflineModelServer
) -> RunHandle:
    prompt = f"waits {uuid.uuid4()}"
    model.script(prompt, [bash_call("echo never"), Reply(text="never")])
    run = await _start(env, settings, prompt)
    await next_event(repo, run.id, EventType.TOOL_APPROVAL_REQUESTED)
    return run


async def _streaming_run(
    env: WorkflowEnvironment, settings: Settings, repo: Repository, model: OfflineModelServer
) -> RunHandle:
    prompt = f"streams {uuid.uuid4()}"
    model.script(prompt, [Reply(text="word " * 2000, chunk_chars=5, delay_s=0.02)])
    run = await _start(env, settings, prompt, tools=[])
    await next_event(repo, run.id, EventType.MESSAGE_DELTA)
    return run


@pytest.mark.parametrize("state", ["waiting", "streaming"])
async def test_the_cancel_update_answers_then_the_run_closes_canceled(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    state: str,
) -> None:
    begin = _waiting_run if state == "waiting" else _streaming_run
    run = await begin(temporal_env, settings, repo, model_server)
    answer = await asyncio.wait_for(run.cancel(reason="enough", requested_by="alice"), 60)
    assert isinstance(answer, CancelAnswer)
    assert answer.status == RunStatus.CANCELED
    assert answer.message == "cancelled by alice: enough"
    await assert_closed_as(run, repo, RunStatus.CANCELED)
    # The raw result is a cancellation; the typed client reports the run's own result.
    with pytest.raises(WorkflowFailureError) as info:
        await run.workflow.result()
    assert isinstance(info.value.cause, CancelledError)
    result = await asyncio.wait_for(run.result(), 30)
    assert isinstance(result, RunResult)
    assert (result.status, result.error) == (RunStatus.CANCELED, "cancelled by alice: enough")
    record = await repo.get_run(run.id)
    assert (result.usage.llm_calls, result.usage.turns) == (record.llm_call_count, record.turns)
    # A second cancel: the run already ended, and the answer says how.
    again = await cancel_run(temporal_env.client, run.id)
    assert again.status == RunStatus.CANCELED, again


async def test_the_cancel_signal_closes_the_run_canceled(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    run = await _waiting_run(temporal_env, settings, repo, model_server)
    await run.workflow.signal(Signal.CANCEL, CancelRequest(reason="by signal", requested_by="app"))
    await assert_closed_as(run, repo, RunStatus.CANCELED)
    result = await asyncio.wait_for(run.result(), 30)
    assert (result.status, result.error) == (RunStatus.CANCELED, "cancelled by app: by signal")


async def test_a_temporal_cancel_closes_the_run_canceled(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    run = await _waiting_run(temporal_env, settings, repo, model_server)
    await run.workflow.cancel()
    await assert_closed_as(run, repo, RunStatus.CANCELED)
    result = await asyncio.wait_for(run.result(), 30)
    assert (result.status, result.error) == (RunStatus.CANCELED, "cancelled through Temporal")
    answer = await cancel_run(temporal_env.client, run.id)
    assert answer.status == RunStatus.CANCELED


async def test_an_encrypted_cancelled_run_keeps_its_result_encrypted_in_the_memo(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    """With payload keys the memo is a payload like any other: the cancel reason is not in the
    history in plaintext, and a client with the key reads the result."""
    keyed = settings.model_copy(
        update={"payload_keys": SecretStr(f"k1:{base64.b64encode(b'k' * 32).decode()}")}
    )
    secret = f"reason-{uuid.uuid4().hex[:8]}"
    client = await connect_client(keyed)
    async with build_worker(client, keyed, repo, graceful_shutdown=timedelta(seconds=1)):
        prompt = f"encrypted {uuid.uuid4()}"
        model_server.script(prompt, [bash_call("echo never"), Reply(text="never")])
        run = await start_run(client, keyed.task_queue, prompt, run_id=f"run-{uuid.uuid4()}")
        await next_event(repo, run.id, EventType.TOOL_APPROVAL_REQUESTED)
        await run.cancel(reason=secret)
        assert await closed(run.workflow) == WorkflowExecutionStatus.CANCELED
        result = await asyncio.wait_for(run.result(), 30)
    assert (result.status, result.error) == (RunStatus.CANCELED, f"cancelled: {secret}")
    plain = temporal_env.client.get_workflow_handle(run.id)
    assert secret.encode() not in (await plain.describe()).raw_info.memo.SerializeToString()
    history = await plain.fetch_history()
    assert secret.encode() not in b"".join(e.SerializeToString() for e in history.events)
