"""Edges of the model turn (issue 9): a database outage mid-turn, inputs the database cannot
store, unregistered search attributes, history that grew with the config, a cancel before the
first token, a late success of an attempt marked lost, colliding tool-call ids and a bounded
read of a long session."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.client import WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import OperatorService, RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.context import build_context, load_context
from agentrun.client import run_result
from agentrun.contracts import AgentConfig, CancelAnswer, CancelRequest, RunResult, ToolCallRequest
from agentrun.db.migrate import upgrade
from agentrun.db.models import RunStatus, ToolCall
from agentrun.protocol.events import EventType
from agentrun.settings import Settings, load_settings
from agentrun.stack import (
    SEARCH_ATTRIBUTES,
    EmbeddedPostgres,
    MissingSearchAttributesError,
    ensure_database,
    free_port,
    require_search_attributes,
    temporal_cli_path,
)
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from starter.api import start_run
from tests.conftest import next_event, start_input
from tests.store_helpers import count, ok_values, run_llm_calls, run_tool_calls
from worker import build_worker, run_worker
from workflows.agent import AgentRunWorkflow


async def run_to_end(env: WorkflowEnvironment, settings: Settings, inp: Any) -> RunResult:
    return await env.client.execute_workflow(
        AgentRunWorkflow.run, inp, id=inp.run_id, task_queue=settings.task_queue
    )


async def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


# -- item 6: a database outage mid-turn --------------------------------------------------------


@pytest.fixture
def outage_pg(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    # Its own server: this test stops it for a minute, which other tests must not feel.
    server = EmbeddedPostgres(tmp_path / "pg", free_port(), extra_options=("-c", "fsync=off"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def outage_repo(outage_pg: EmbeddedPostgres) -> AsyncIterator[Repository]:
    url = outage_pg.url("outage")
    ensure_database(url)
    sa_url = url.replace("postgresql://", "postgresql+psycopg://")
    await asyncio.to_thread(upgrade, sa_url)
    repo = Repository.connect(sa_url)
    try:
        yield repo
    finally:
        await repo.close()


async def test_a_database_outage_mid_turn_does_not_spend_model_attempts(
    temporal_env: WorkflowEnvironment,
    outage_pg: EmbeddedPostgres,
    outage_repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    settings = load_settings(
        temporal_address=temporal_env.client.service_client.config.target_host,
        database_url=outage_pg.url("outage"),
        openai_base_url=model_server.base_url,
        model="offline-scripted",
        openai_api_key="test-key",
        task_queue=f"tq-{uuid.uuid4()}",
        data_dir=tmp_path / "data",
        worker_versioning=False,
    )
    assert settings.db_retry_s >= 90
    prompt = f"outage {run_id}"
    model_server.script(prompt, [Reply(text="word " * 80, chunk_chars=5, delay_s=0.05)])
    worker = build_worker(
        temporal_env.client, settings, outage_repo, graceful_shutdown=timedelta(seconds=1)
    )
    async with worker:
        handle = await temporal_env.client.start_workflow(
            AgentRunWorkflow.run,
            start_input(run_id, prompt, tools=[]),
            id=run_id,
            task_queue=settings.task_queue,
        )
        await next_event(outage_repo, run_id, EventType.MESSAGE_DELTA)
        await asyncio.to_thread(outage_pg.stop)
        # The outage itself lasts a minute: this sleep is the fault, not a synchronisation.
        await asyncio.sleep(60)
        await asyncio.to_thread(outage_pg.start)
        result = await asyncio.wait_for(handle.result(), 120)
    assert result.status == "DONE", result
    assert result.final_text == ("word " * 80)
    llm = await run_llm_calls(outage_repo, run_id)
    assert [(c.turn, c.attempt, c.status) for c in llm] == [(1, 1, "ok")]
    assert [r.outcome for r in model_server.requests_for(prompt)] == ["ok"]
    events = await outage_repo.read_events(run_id, 0, limit=100_000)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert not [e for e in events if e.type == EventType.STREAM_RESET]
    deltas = "".join(e.data["text"] for e in events if e.type == EventType.MESSAGE_DELTA)
    assert deltas == "word " * 80


async def test_attempts_that_fail_on_the_database_do_not_spend_the_model_budget(
    temporal_env: WorkflowEnvironment,
    outage_pg: EmbeddedPostgres,
    outage_repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    # An outage longer than the worker waits (AGENTRUN_DB_RETRY_S=2): attempts fail, and those
    # that never reached the model must not count against model_max_attempts=3.
    settings = load_settings(
        temporal_address=temporal_env.client.service_client.config.target_host,
        database_url=outage_pg.url("outage"),
        openai_base_url=model_server.base_url,
        model="offline-scripted",
        openai_api_key="test-key",
        task_queue=f"tq-{uuid.uuid4()}",
        data_dir=tmp_path / "data",
        db_retry_s=2,
        worker_versioning=False,
    )
    prompt = f"long outage {run_id}"
    model_server.script(
        prompt,
        [Reply(text="word " * 80, chunk_chars=5, delay_s=0.05), Reply(text="Back again.")],
    )
    worker = build_worker(
        temporal_env.client, settings, outage_repo, graceful_shutdown=timedelta(seconds=1)
    )
    async with worker:
        handle = await temporal_env.client.start_workflow(
            AgentRunWorkflow.run,
            start_input(run_id, prompt, tools=[], model_max_attempts=3),
            id=run_id,
            task_queue=settings.task_queue,
        )
        await next_event(outage_repo, run_id, EventType.MESSAGE_DELTA)
        await asyncio.to_thread(outage_pg.stop)
        # The outage: long enough for several attempts to fail on the database.
        await asyncio.sleep(15)
        await asyncio.to_thread(outage_pg.start)
        result = await asyncio.wait_for(handle.result(), 120)
    assert result.status == "DONE", result
    assert result.final_text == "Back again."
    llm = await run_llm_calls(outage_repo, run_id)
    statuses = [c.status for c in sorted(llm, key=lambda c: c.attempt)]
    assert [c.attempt for c in sorted(llm, key=lambda c: c.attempt)] == list(range(1, len(llm) + 1))
    assert statuses[0] == "lost" and statuses[-1] == "ok", statuses
    assert len(statuses) >= 3 and set(statuses[1:-1]) == {"db_error"}, statuses
    assert [r.outcome for r in model_server.requests_for(prompt)][-1] == "ok"
    assert len(model_server.requests_for(prompt)) == 2


# -- item 7: inputs the database cannot store --------------------------------------------------


async def test_a_nul_prompt_is_refused_by_the_client_and_nothing_is_written(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    run_id: str,
) -> None:
    with pytest.raises(ValidationError) as info:
        await start_run(
            temporal_env.client, settings.task_queue, "hello\x00there", run_id=run_id, repo=repo
        )
    assert "NUL" in str(info.value)
    assert await repo.find_run(run_id) is None
    with pytest.raises(RPCError) as missing:
        await temporal_env.client.get_workflow_handle(run_id).describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("prompt", "config", "expect"),
    [
        ("hello\x00there", {}, "NUL"),
        ("hello", {"model": "m" * 300}, "200"),
        ("hello", {"system_prompt": "be\x00brief"}, "NUL"),
    ],
    ids=["nul-prompt", "long-model", "nul-system-prompt"],
)
async def test_a_raw_payload_the_database_cannot_store_fails_the_run_promptly(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    run_id: str,
    prompt: str,
    config: dict[str, Any],
    expect: str,
) -> None:
    session_id = f"s-{uuid.uuid4()}"
    handle = await temporal_env.client.start_workflow(
        "agentrun.AgentRun",
        {"run_id": run_id, "session_id": session_id, "prompt": prompt, "config": config},
        id=run_id,
        task_queue=settings.task_queue,
    )
    with pytest.raises(WorkflowFailureError) as info:
        await asyncio.wait_for(handle.result(), 30)
    message = str(info.value.cause)
    assert expect in message, message
    assert await repo.find_run(run_id) is None


async def test_a_model_reply_with_a_nul_is_stored_not_retried(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"binary reply {run_id}"
    model_server.script(prompt, [Reply(text="a\x00b")])
    result = await asyncio.wait_for(
        run_to_end(temporal_env, settings, start_input(run_id, prompt, tools=[])), 60
    )
    assert result.status == "DONE" and result.final_text == "a\ufffdb"
    assert [(c.attempt, c.status) for c in await run_llm_calls(repo, run_id)] == [(1, "ok")]
    assert len(model_server.requests_for(prompt)) == 1


# -- item 8: unregistered search attributes -----------------------------------------------------


@pytest.fixture(scope="module")
async def bare_temporal() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server that knows none of agentrun's search attributes."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        data_converter=pydantic_data_converter,
        search_attributes=[],
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


async def test_the_worker_refuses_to_start_without_its_search_attributes(
    bare_temporal: WorkflowEnvironment,
    database_url: str,
    model_server: OfflineModelServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    async def refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
        # A locked-down cluster (Temporal Cloud, a namespace without operator rights).
        raise RPCError("permission denied: operator API", RPCStatusCode.PERMISSION_DENIED, b"")

    monkeypatch.setattr(OperatorService, "add_search_attributes", refuse)
    settings = load_settings(
        temporal_address=bare_temporal.client.service_client.config.target_host,
        database_url=database_url,
        openai_base_url=model_server.base_url,
        model="offline-scripted",
        task_queue=f"tq-{uuid.uuid4()}",
        data_dir=tmp_path / "data",
        worker_versioning=False,
    )
    stop = asyncio.Event()
    stop.set()  # a worker that did start would stop again at once
    with pytest.raises(MissingSearchAttributesError) as info:
        await asyncio.wait_for(run_worker(settings, stop, migrate=False), 60)
    message = str(info.value)
    for name, kind in SEARCH_ATTRIBUTES.items():
        assert name in message
        assert f"temporal operator search-attribute create --name {name} --type {kind}" in message
    assert "permission denied" in message


async def test_the_search_attribute_check_passes_where_they_are_registered(
    temporal_env: WorkflowEnvironment,
) -> None:
    await require_search_attributes(temporal_env.client)


# -- item 12: history does not grow with the config ---------------------------------------------


async def _history_bytes(
    env: WorkflowEnvironment, settings: Settings, model: OfflineModelServer, **config: Any
) -> int:
    run_id = f"run-{uuid.uuid4()}"
    prompt = f"history {run_id}"
    model.script(
        prompt,
        [
            *(
                Reply(text="c", tool_calls=[ToolCallSpec("calculator", {"expression": f"{n}+1"})])
                for n in range(3)
            ),
            Reply(text="done"),
        ],
    )
    result = await run_to_end(
        env, settings, start_input(run_id, prompt, approval="skip_all", **config)
    )
    assert result.status == "DONE" and result.usage.turns == 4
    info = (await env.client.get_workflow_handle(run_id).describe()).raw_description
    return int(info.workflow_execution_info.history_size_bytes)


async def test_history_does_not_grow_with_the_system_prompt(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    model_server: OfflineModelServer,
) -> None:
    small = await _history_bytes(temporal_env, settings, model_server)
    big = await _history_bytes(
        temporal_env, settings, model_server, system_prompt="You are careful. " * 5_823
    )
    print(f"history of a 4-turn run: {small} B (default prompt), {big} B (99k system prompt)")
    # The prompt is in the workflow input once (the start event); it must not ride on every
    # model turn as well.
    assert big < small + 99_000 + 20_000, (small, big)


async def test_the_model_sees_the_system_prompt_read_from_the_run_row(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"system prompt {run_id}"
    model_server.script(prompt, [Reply(text="ok")])
    system = f"You are a pirate {run_id}."
    result = await run_to_end(
        temporal_env,
        settings,
        start_input(run_id, prompt, tools=[], system_prompt=system, temperature=0.5),
    )
    assert result.status == "DONE"
    body = model_server.requests_for(prompt)[0].body
    assert body["messages"][0] == {"role": "system", "content": system}
    assert body["temperature"] == 0.5


# -- item 13: cancel before the first token; a slow first token is not a stall -------------------


async def test_cancel_before_the_first_token_stops_the_turn_at_once(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"think long {run_id}"
    model_server.script(prompt, [Reply(text="too late", first_token_delay_s=20)])
    handle = await temporal_env.client.start_workflow(
        AgentRunWorkflow.run,
        start_input(run_id, prompt, tools=[]),
        id=run_id,
        task_queue=settings.task_queue,
    )

    async def model_called() -> bool:
        return bool(model_server.requests_for(prompt))

    await wait_until(model_called, 30, "the model request")
    started = time.monotonic()
    answer = await handle.execute_update(
        "cancel", CancelRequest(reason="changed my mind"), result_type=CancelAnswer
    )
    latency = time.monotonic() - started
    print(f"cancel before the first token answered in {latency:.2f}s")
    assert answer.status == "CANCELED"
    assert latency < 10, latency
    result = await asyncio.wait_for(run_result(temporal_env.client, run_id), 30)
    assert result.status == "CANCELED"  # the workflow closed as Canceled; the memo keeps this
    assert (await repo.get_run(run_id)).status == "CANCELED"


async def test_a_first_token_slower_than_the_stall_timeout_is_not_a_stall(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"reason first {run_id}"
    model_server.script(prompt, [Reply(text="Considered answer.", first_token_delay_s=6)])
    result = await run_to_end(
        temporal_env,
        settings,
        start_input(run_id, prompt, tools=[], model_heartbeat_timeout_s=3),
    )
    assert result.status == "DONE" and result.final_text == "Considered answer."
    llm = await run_llm_calls(repo, run_id)
    assert [(c.attempt, c.status) for c in llm] == [(1, "ok")]
    assert (llm[0].time_to_first_token_ms or 0) >= 5_000
    assert len(model_server.requests_for(prompt)) == 1


async def test_a_stall_after_the_first_token_is_still_caught(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    from agentrun.testing.offline_model import Fault

    prompt = f"stall {run_id}"
    model_server.script(
        prompt, [Fault("stall", stall_s=30, after_chunks=2), Reply(text="Recovered.")]
    )
    result = await asyncio.wait_for(
        run_to_end(
            temporal_env,
            settings,
            start_input(run_id, prompt, tools=[], model_heartbeat_timeout_s=2),
        ),
        60,
    )
    assert result.status == "DONE" and result.final_text == "Recovered."
    llm = await run_llm_calls(repo, run_id)
    assert [(c.attempt, c.status) for c in llm] == [(1, "error"), (2, "ok")]
    assert "stall" in (llm[0].error or "")


# -- item 15: a late success of an attempt marked lost ------------------------------------------


async def _open(repo: Repository, run_id: str, session_id: str | None = None) -> str:
    session_id = session_id or f"s-{uuid.uuid4()}"
    await repo.open_run(
        run_id=run_id, session_id=session_id, model="m", config=AgentConfig(), prompt="question"
    )
    return session_id


async def test_a_late_success_of_a_lost_attempt_is_the_one_ok_row(
    repo: Repository, run_id: str
) -> None:
    session_id = await _open(repo, run_id)
    # Attempt 2 starts and marks attempt 1 lost; then attempt 1 finishes after all.
    assert await repo.mark_lost_attempts(run_id, 1, 2, "m") == 1
    message, call, inserted = await repo.record_model_turn(
        run_id=run_id,
        session_id=session_id,
        turn=1,
        attempt=1,
        model="m",
        text="late but fine",
        tool_calls=[],
        call_values=ok_values(),
    )
    assert inserted and (call.attempt, call.status) == (1, "ok")
    found = await repo.find_turn(run_id, 1)
    assert found is not None
    assert found[0].content == "late but fine"
    assert found[1] is not None and (found[1].attempt, found[1].status) == (1, "ok")
    # Attempt 2 gets to the end too: it finds the record instead of raising.
    message2, call2, inserted2 = await repo.record_model_turn(
        run_id=run_id,
        session_id=session_id,
        turn=1,
        attempt=2,
        model="m",
        text="second",
        tool_calls=[],
        call_values=ok_values(),
    )
    assert not inserted2 and message2.id == message.id and call2.attempt == 1
    llm = await run_llm_calls(repo, run_id)
    assert [(c.attempt, c.status) for c in llm] == [(1, "ok")]
    run = await repo.get_run(run_id)
    assert run.llm_call_count == 1 and run.completion_tokens == 5


# -- item 17: colliding tool-call ids; a bounded read of a long session --------------------------


def _calls(ids: list[str]) -> list[ToolCallRequest]:
    return [
        ToolCallRequest(id=call_id, name="calculator", arguments=f'{{"expression": "{n}+1"}}')
        for n, call_id in enumerate(ids)
    ]


@pytest.mark.parametrize(
    "ids",
    [
        ["", "call_t1_1", "call_t1_1", ""],
        ["call_t1_1", "", "x", "call_t1_2", "x"],
        ["call_t1_0", "call_t1_0", "call_t1_1_2", ""],
    ],
)
async def test_replacement_tool_call_ids_never_collide(
    repo: Repository, run_id: str, ids: list[str]
) -> None:
    session_id = await _open(repo, run_id)
    message, _, _ = await repo.record_model_turn(
        run_id=run_id,
        session_id=session_id,
        turn=1,
        attempt=1,
        model="m",
        text="",
        tool_calls=_calls(ids),
        call_values=ok_values(),
    )
    sent = [c["id"] for c in message.tool_calls or []]
    assert len(sent) == len(ids) and len(set(sent)) == len(ids), sent
    assert all(sent), sent
    rows = await run_tool_calls(repo, run_id)
    assert sorted(r.tool_call_id for r in rows) == sorted(sent)
    events = await repo.read_events(run_id, 0, limit=1000)
    assert sorted(
        e.data["tool_call_id"] for e in events if e.type == EventType.TOOL_CALL
    ) == sorted(sent)
    assert (await repo.get_run(run_id)).tool_call_count == len(ids)


async def test_colliding_tool_call_ids_from_the_model_each_get_a_result(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"four sums {run_id}"
    ids = ["call_t1_1", "call_t1_1", "call_t1_2", None]
    model_server.script(
        prompt,
        [
            Reply(
                text="Summing.",
                tool_calls=[
                    ToolCallSpec("calculator", {"expression": f"{n}+1"}, id=call_id)
                    for n, call_id in enumerate(ids)
                ],
            ),
            Reply(text="All four done."),
        ],
    )
    result = await run_to_end(
        temporal_env, settings, start_input(run_id, prompt, approval="skip_all")
    )
    assert result.status == "DONE" and result.usage.tool_calls == 4
    rows = await run_tool_calls(repo, run_id)
    assert len(rows) == 4 and len({r.tool_call_id for r in rows}) == 4
    assert sorted(r.result or "" for r in rows) == ["1", "2", "3", "4"]
    events = await repo.read_events(run_id, 0, limit=10_000)
    assert sum(e.type == EventType.TOOL_CALL for e in events) == 4
    assert sum(e.type == EventType.TOOL_RESULT for e in events) == 4
    second = model_server.requests_for(prompt)[1].body["messages"]
    answered = [m["tool_call_id"] for m in second if m["role"] == "tool"]
    assert sorted(answered) == sorted(r.tool_call_id for r in rows)
    assert await count(repo, ToolCall, run_id=run_id) == 4


async def _long_session(repo: Repository, runs: int) -> tuple[str, str]:
    """A session of `runs` finished runs (user, assistant with a call, tool, assistant), then
    the run that is asking now."""
    session_id = f"s-{uuid.uuid4()}"
    for n in range(runs):
        rid = f"old-{n}-{uuid.uuid4()}"
        await _open(repo, rid, session_id)
        await repo.record_model_turn(
            run_id=rid,
            session_id=session_id,
            turn=1,
            attempt=1,
            model="m",
            text=f"computing {n}",
            tool_calls=_calls([f"c{n}"]),
            call_values=ok_values(),
        )
        await repo.record_tool_result(
            session_id=session_id, run_id=rid, tool_call_id=f"c{n}", result=str(n), is_error=False
        )
        await repo.record_model_turn(
            run_id=rid,
            session_id=session_id,
            turn=2,
            attempt=1,
            model="m",
            text=f"the answer is {n} " + "and some more words " * 10,
            tool_calls=[],
            call_values=ok_values(),
        )
        await repo.set_run_status(rid, RunStatus.DONE)
    now = f"now-{uuid.uuid4()}"
    await _open(repo, now, session_id)
    return session_id, now


async def test_a_long_session_is_read_newest_first_up_to_the_budget(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    session_id, now = await _long_session(repo, 120)
    full = await repo.session_messages(session_id)
    assert len(full) == 120 * 4 + 1
    fetched: list[int] = []
    original = Repository.session_messages_before

    async def counting(self: Repository, *args: Any, **kwargs: Any) -> Any:
        rows = await original(self, *args, **kwargs)
        fetched.append(len(rows))
        return rows

    monkeypatch.setattr(Repository, "session_messages_before", counting)
    for budget in (300, 1_000, 2_500):
        fetched.clear()
        context = await load_context(repo, "Be brief.", session_id, now, budget)
        assert context == build_context("Be brief.", full, now, budget), budget
        assert sum(fetched) < len(full) / 2, (budget, fetched)
        assert len(context) > 2
    # A budget bigger than the whole session reads it all and keeps it all.
    fetched.clear()
    context = await load_context(repo, "Be brief.", session_id, now, 2_000_000)
    assert context == build_context("Be brief.", full, now, 2_000_000)
    assert len(context) == len(full) + 1
