"""Forgetting a session, through the CLI and the HTTP API, on the real stack: afterwards no
text of the session is left in any text, varchar, json or jsonb column of any table (a query
over information_schema), usage figures remain, each run's log ends with the tombstone,
Temporal's histories are gone; an active run refuses the deletion unless it is cancelled;
another tenant gets 404; an unknown id a clear error."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from temporalio.client import Client, ScheduleActionStartWorkflow
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities.retention import RetentionActivities
from agentrun.client import RunNotFound, decide, describe_run
from agentrun.client.forget import delete_session
from agentrun.contracts import AgentConfig
from agentrun.contracts.retention import RetentionBatchInput, RetentionInput
from agentrun.db.models import DEFAULT_TENANT, LlmCall, Run, WebhookDelivery
from agentrun.protocol.events import EventType, parse_event
from agentrun.protocol.names import RETENTION_WORKFLOW_NAME
from agentrun.protocol.statuses import Decision, RunStatus
from agentrun.retention import sync_retention_schedule
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.store.forget import SessionDeletedError, erase_session
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from tests.conftest import next_event, start_input
from tests.http_support import bearer, start
from tests.test_cli import agentrun, cli_env
from workflows.agent import AgentRunWorkflow
from workflows.retention import SessionRetentionWorkflow

pytest_plugins = ["tests.http_fixtures"]

HISTORY_DELETION_S = 45
TEXT_TYPES = ("text", "character varying", "character", "json", "jsonb")


async def marker_hits(repo: Repository, marker: str) -> set[str]:
    """Every `table.column` of a text-like type in which some row holds `marker`."""
    hits = set()
    async with repo.session() as db:
        columns = (
            await db.execute(
                text(
                    "SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND data_type = ANY(:types)"
                ),
                {"types": list(TEXT_TYPES)},
            )
        ).all()
        assert len(columns) > 40, columns  # every table's columns, not a few
        for table, column in columns:
            found = await db.execute(
                text(f'SELECT 1 FROM "{table}" WHERE "{column}"::text LIKE :m LIMIT 1'),
                {"m": f"%{marker}%"},
            )
            if found.first() is not None:
                hits.add(f"{table}.{column}")
    return hits


async def usage(repo: Repository, run_ids: list[str]) -> tuple[Any, ...]:
    async with repo.session() as db:
        calls = (
            await db.execute(
                select(
                    func.count(),
                    func.sum(LlmCall.prompt_tokens),
                    func.sum(LlmCall.completion_tokens),
                ).where(LlmCall.run_id.in_(run_ids))
            )
        ).one()
        runs = (
            await db.execute(
                select(
                    func.sum(Run.prompt_tokens),
                    func.sum(Run.completion_tokens),
                    func.sum(Run.llm_call_count),
                    func.sum(Run.tool_call_count),
                ).where(Run.id.in_(run_ids))
            )
        ).one()
    return (*calls, *runs)


async def assert_forgotten(
    client: Client, repo: Repository, marker: str, run_ids: list[str]
) -> None:
    assert await marker_hits(repo, marker) == set()
    for run_id in run_ids:
        events = await repo.read_events(run_id, 0, limit=10_000)
        parsed = [parse_event(e.run_id, e.seq, e.type, e.data) for e in events]
        assert parsed[-1].type == EventType.SESSION_DELETED, [e.type for e in parsed]
        assert {e.type for e in parsed} <= {
            EventType.RUN_STATUS,
            EventType.LLM_USAGE,
            EventType.SESSION_DELETED,
        }
        # Temporal deletes a history in the background (measured on the dev server here: 0 to
        # 20 s after the request): wait for it, bounded.
        deadline = time.monotonic() + HISTORY_DELETION_S
        while True:
            try:
                await describe_run(client, run_id)
            except RunNotFound:
                break
            assert time.monotonic() < deadline, f"the history of {run_id} is still there"
            await asyncio.sleep(0.2)


async def test_cli_delete_erases_every_text_and_keeps_usage(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    mark = f"mk{uuid.uuid4().hex}"
    session = f"s-{uuid.uuid4()}"
    first, second = f"run-{uuid.uuid4()}", f"run-{uuid.uuid4()}"
    model_server.script(
        f"{mark} first",
        [
            Reply(
                text=f"adding {mark}",
                tool_calls=[ToolCallSpec("calculator", {"expression": "2+2", "why": mark})],
            ),
            Reply(text=f"four, {mark}"),
        ],
    )
    model_server.script(
        f"{mark} second",
        [
            Reply(tool_calls=[ToolCallSpec("calculator", {"expression": "1+1"}, id="c2")]),
            Reply(text=f"not allowed, {mark}"),
        ],
    )
    config: dict[str, Any] = {"system_prompt": f"Be brief, {mark}.", "tools": ["calculator"]}
    await temporal_env.client.execute_workflow(
        AgentRunWorkflow.run,
        start_input(first, f"{mark} first", session, **config),
        id=first,
        task_queue=settings.task_queue,
    )
    handle = await temporal_env.client.start_workflow(
        AgentRunWorkflow.run,
        start_input(second, f"{mark} second", session, approval="require_all", **config),
        id=second,
        task_queue=settings.task_queue,
    )
    await next_event(repo, second, EventType.TOOL_APPROVAL_REQUESTED)
    await decide(
        temporal_env.client,
        second,
        "c2",
        Decision.REJECT,
        reason=f"because {mark}",
        decided_by=f"person {mark}",
    )
    assert (await handle.result()).status == RunStatus.DONE
    # A webhook delivery of the session that was never sent (its payload holds text).
    delivery = f"d-{uuid.uuid4().hex}"
    async with repo.transaction() as db:
        db.add(
            WebhookDelivery(
                id=delivery,
                tenant=DEFAULT_TENANT,
                url="https://hooks.example.com/in",
                run_id=first,
                session_id=session,
                event_seq=1,
                event_type="run.finished",
                payload={"final_text": f"four, {mark}"},
            )
        )
    before = await marker_hits(repo, mark)
    assert {
        "messages.content",
        "messages.tool_calls",
        "tool_calls.arguments",
        "tool_calls.decision_reason",
        "tool_calls.decided_by",
        "runs.config",
        "runs.final_text",
        "run_events.data",
        "webhook_deliveries.payload",
    } <= before, before
    spent = await usage(repo, [first, second])
    assert spent[0] == 4 and spent[1] > 0

    env = cli_env(settings)
    unsure = await agentrun(env, "sessions", "delete", session)
    assert unsure.code == 2 and "--yes" in unsure.err, unsure
    assert await marker_hits(repo, mark) == before  # nothing changed
    done = await agentrun(env, "sessions", "delete", session, "--yes", "--json")
    assert done.code == 0, done
    answer = json.loads(done.out)
    assert answer["runs"] == [first, second] and answer["messages_erased"] >= 7
    assert answer["histories_deleted"] >= 2 and answer["history_errors"] == []

    await assert_forgotten(temporal_env.client, repo, mark, [first, second])
    assert await usage(repo, [first, second]) == spent
    assert (await repo.get_session(session)).deleted_at is not None
    async with repo.session() as db:
        row = await db.get(WebhookDelivery, delivery)
        assert row is not None and (row.status, row.payload) == ("failed", {})
    # Deleting again changes nothing and says so as a success; an unknown id is not found.
    again = await agentrun(env, "sessions", "delete", session, "--yes", "--json")
    assert again.code == 0 and json.loads(again.out)["messages_erased"] == 0, again
    unknown = await agentrun(env, "sessions", "delete", f"nope-{mark}", "--yes")
    assert unknown.code == 4 and f"no session 'nope-{mark}'" in unknown.err, unknown


async def test_http_delete_refuses_an_active_run_unless_cancelled(
    http: httpx.AsyncClient,
    keys: Any,
    repo: Repository,
    worker: Worker,
    temporal_env: WorkflowEnvironment,
    model_server: OfflineModelServer,
) -> None:
    mark = f"mk{uuid.uuid4().hex}"
    prompt = f"slow {mark}"
    model_server.script(prompt, [Reply(text=f"{mark} " + "slow " * 600, delay_s=0.02)])
    started = await start(http, keys.full, prompt)
    rid, session = started["run_id"], started["session_id"]
    await next_event(repo, rid, EventType.MESSAGE_DELTA)

    url = f"/v1/sessions/{session}"
    assert (await http.delete(url, headers=bearer(keys.other_tenant))).status_code == 404
    assert (await http.delete(url, headers=bearer(keys.read_only))).status_code == 403
    missing = await http.delete(f"/v1/sessions/nope-{mark}", headers=bearer(keys.full))
    assert missing.status_code == 404 and "no session" in missing.json()["detail"]
    busy = await http.delete(url, headers=bearer(keys.full))
    assert busy.status_code == 409 and busy.json()["run_ids"] == [rid], busy.text
    assert (await repo.get_run(rid)).status == RunStatus.RUNNING

    done = await http.delete(url, params={"cancel_active": "true"}, headers=bearer(keys.writer))
    assert done.status_code == 200, done.text
    assert done.json()["cancelled"] == [rid] and done.json()["runs"] == [rid]
    assert (await repo.get_run(rid)).status == RunStatus.CANCELED
    await assert_forgotten(temporal_env.client, repo, mark, [rid])
    # The session is gone for good: not listed, no new run in it.
    listed = (await http.get("/v1/sessions", headers=bearer(keys.full))).json()
    assert session not in [s["session_id"] for s in listed["sessions"]]
    again = await http.post(
        "/v1/runs", json={"prompt": "hello", "session_id": session}, headers=bearer(keys.full)
    )
    assert again.status_code == 404 and "was deleted" in again.json()["detail"], again.text


# -- retention ------------------------------------------------------------------------------


async def _session_with_run(repo: Repository, mark: str, *, done: bool, age_days: float) -> str:
    session, run = f"s-{uuid.uuid4()}", f"run-{uuid.uuid4()}"
    await repo.open_run(
        run_id=run, session_id=session, model="m", config=AgentConfig(), prompt=f"{mark} hi"
    )
    if done:
        await repo.set_run_status(run, RunStatus.DONE)
    async with repo.transaction() as db:
        ago = text("now() - make_interval(secs => :s)")
        secs = {"s": age_days * 86400, "id": session}
        await db.execute(text(f"UPDATE sessions SET created_at = {ago.text} WHERE id = :id"), secs)
        await db.execute(
            text(
                f"UPDATE runs SET created_at = {ago.text}, updated_at = {ago.text} "
                "WHERE session_id = :id"
            ),
            secs,
        )
    return session


async def test_retention_deletes_only_sessions_idle_past_the_cutoff(
    temporal_env: WorkflowEnvironment, repo: Repository
) -> None:
    old, recent, busy = (f"mk{uuid.uuid4().hex}" for _ in range(3))
    old_s = await _session_with_run(repo, old, done=True, age_days=40)
    await _session_with_run(repo, recent, done=True, age_days=10)
    busy_s = await _session_with_run(repo, busy, done=False, age_days=40)
    activities = RetentionActivities(repo, temporal_env.client)
    cutoff = datetime.now(UTC) - timedelta(days=30)
    result = await ActivityEnvironment().run(
        activities.delete_idle_sessions, RetentionBatchInput(idle_before=cutoff, limit=1000)
    )
    assert old_s in result.deleted and busy_s not in result.deleted + result.skipped
    assert await marker_hits(repo, old) == set()
    assert await marker_hits(repo, recent) == {"messages.content", "run_events.data"}
    assert "messages.content" in await marker_hits(repo, busy)
    again = await ActivityEnvironment().run(
        activities.delete_idle_sessions, RetentionBatchInput(idle_before=cutoff, limit=1000)
    )
    assert old_s not in again.deleted  # deleted sessions are not idle sessions


async def test_the_retention_schedule_follows_the_setting(
    temporal_env: WorkflowEnvironment, settings: Settings, worker: Worker
) -> None:
    client = temporal_env.client
    on = settings.model_copy(update={"session_retention_days": 30.0})
    sid = await sync_retention_schedule(client, on)
    assert sid is not None
    desc = await client.get_schedule_handle(sid).describe()
    action = desc.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert action.workflow == RETENTION_WORKFLOW_NAME and action.task_queue == settings.task_queue
    # Again with another value: the same schedule, updated (idempotent at every worker start).
    shorter = on.model_copy(update={"session_retention_days": 7.0})
    assert await sync_retention_schedule(client, shorter) == sid
    desc = await client.get_schedule_handle(sid).describe()
    action = desc.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    [arg] = action.args
    converter = client.data_converter.payload_converter
    assert converter.from_payloads([arg], [RetentionInput])[0].idle_days == 7.0  # type: ignore[list-item]
    # The workflow the schedule starts runs on the workers.
    summary = await client.execute_workflow(
        SessionRetentionWorkflow.run,
        RetentionInput(idle_days=3650),
        id=f"retention-{uuid.uuid4()}",
        task_queue=settings.task_queue,
    )
    assert summary.batches == 1 and summary.deleted == 0
    # Unset (and webhook deliveries kept for ever): the schedule is removed.
    off = settings.model_copy(update={"webhook_delivery_retention_days": 0})
    assert await sync_retention_schedule(client, off) is None
    with pytest.raises(RPCError):
        await client.get_schedule_handle(sid).describe()


async def test_a_run_opening_while_its_session_is_deleted_is_refused(repo: Repository) -> None:
    mark = f"mk{uuid.uuid4().hex}"
    session = await _session_with_run(repo, mark, done=True, age_days=0)
    second = f"run-{uuid.uuid4()}"
    async with repo.transaction() as db:
        await erase_session(db, session, DEFAULT_TENANT)
        # The open waits for the session row the deletion holds (at the insert of the session
        # or at its lock, wherever it gets first).
        opening = asyncio.create_task(
            repo.open_run(
                run_id=second, session_id=session, model="m", config=AgentConfig(), prompt=mark
            )
        )
        deadline = time.monotonic() + 20
        while not await _waits_for_a_lock(repo, session):
            assert time.monotonic() < deadline and not opening.done(), opening
            await asyncio.sleep(0.05)
    with pytest.raises(SessionDeletedError, match="was deleted"):
        await asyncio.wait_for(opening, 20)
    assert await repo.find_run(second) is None
    assert await marker_hits(repo, mark) == set()


async def _waits_for_a_lock(repo: Repository, session: str) -> bool:
    async with repo.session() as db:
        found = await db.execute(
            text(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%sessions%' AND datname = current_database()"
            )
        )
        return found.first() is not None


async def test_a_run_whose_workflow_is_gone_does_not_hold_the_session(
    temporal_env: WorkflowEnvironment, repo: Repository
) -> None:
    # Opened in the store only: no workflow drives it (as after a terminate), so it would
    # never end; the deletion records it FAILED, as a new run on the session would, and goes on.
    mark = f"mk{uuid.uuid4().hex}"
    session = await _session_with_run(repo, mark, done=False, age_days=0)
    done = await delete_session(temporal_env.client, repo, session)
    [run_id] = done.run_ids
    assert done.cancelled == [] and (await repo.get_run(run_id)).status == RunStatus.FAILED
    assert await marker_hits(repo, mark) == set()
