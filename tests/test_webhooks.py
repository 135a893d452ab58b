"""Webhooks out, on the real stack: PostgreSQL, the Temporal dev server, a worker with its
dispatcher, and a real HTTP receiver on 127.0.0.1 that checks every signature.

Each test's runs are of a tenant of its own, so its webhooks and secret touch no other test;
the tenant webhooks a test adds are removed when it ends all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, delete, pool, select
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.webhook_dispatch import WebhookDispatcher, delivery_workflow_id
from activities.webhooks import WebhookActivities
from agentrun.contracts import AgentConfig, RunResult
from agentrun.contracts.webhooks import (
    DeliverWebhookInput,
    WebhookDeliveryInput,
    WebhookFailureInput,
)
from agentrun.db.models import Base, Tenant, WebhookDelivery
from agentrun.protocol.events import EventType, RunStatusData, ToolWaitData
from agentrun.protocol.names import WEBHOOK_NOTIFY_CHANNEL, WEBHOOK_WORKFLOW_NAME
from agentrun.protocol.statuses import RunStatus, WebhookDeliveryStatus
from agentrun.protocol.webhooks import WebhookEvent, verify
from agentrun.settings import Settings
from agentrun.stack import free_port
from agentrun.store import EventIn, Repository, event_key
from agentrun.store.webhooks import WebhookStore, delivery_id
from agentrun.testing.offline_model import OfflineModelServer, Reply
from tests.conftest import bash_call, next_event, start_input
from tests.test_cli import agentrun, cli_env
from worker import build_webhook_worker, build_worker, run_worker
from workflows.agent import AgentRunWorkflow

APPROVAL = WebhookEvent.TOOL_APPROVAL_REQUESTED.value
FINISHED = WebhookEvent.RUN_FINISHED.value
# Short waits between attempts, so a test sees three attempts in about a second.
FAST = {"initial_interval_s": 0.2, "max_interval_s": 1.0, "max_attempts": 3}
DELIVERED = WebhookDeliveryStatus.DELIVERED.value
FAILED = WebhookDeliveryStatus.FAILED.value


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    """Answers each POST with the next of `codes` (then 200), or holds it (`hang`)."""

    codes: list[int] = field(default_factory=list)
    hang: bool = False
    received: list[Received] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if receiver.hang:
                    receiver.released.wait(30)
                    return
                code = receiver.codes.pop(0) if receiver.codes else 200
                receiver.received.append(Received(dict(self.headers.items()), body, code))
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks?app=test"

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The tests' receivers listen on loopback."""
    return settings.model_copy(update={"webhook_allow_private": True})


@contextlib.asynccontextmanager
async def delivering(
    env: WorkflowEnvironment, repo: Repository, settings: Settings, **schedule: Any
) -> AsyncIterator[WebhookDispatcher]:
    """A webhook worker and a dispatcher, as run_worker runs them, with a short schedule."""
    w = build_webhook_worker(env.client, settings, repo, graceful_shutdown=timedelta(seconds=1))
    dispatcher = WebhookDispatcher(
        env.client, repo, w.task_queue, poll_interval=0.5, schedule={**FAST, **schedule}
    )
    async with w, dispatcher:
        yield dispatcher


@pytest.fixture
async def dispatcher(
    temporal_env: WorkflowEnvironment, repo: Repository, settings: Settings
) -> AsyncIterator[WebhookDispatcher]:
    async with delivering(temporal_env, repo, settings) as d:
        yield d


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def hooks(repo: Repository) -> AsyncIterator[WebhookStore]:
    """The store; every tenant webhook a test adds is removed when it ends."""
    store = WebhookStore(repo)
    try:
        yield store
    finally:
        for hook in await store.list_webhooks():
            await store.remove_webhook(hook.id)


async def start_run(
    env: WorkflowEnvironment,
    settings: Settings,
    run_id: str,
    prompt: str,
    tenant: str | None = None,
    **config: Any,
) -> WorkflowHandle[AgentRunWorkflow, RunResult]:
    inp = start_input(run_id, prompt, **config).model_copy(update={"tenant": tenant})
    return await env.client.start_workflow(
        AgentRunWorkflow.run,
        inp,
        id=run_id,
        task_queue=settings.task_queue,
    )


async def deliveries_of(repo: Repository, run_id: str) -> list[WebhookDelivery]:
    async with repo.session() as db:
        rows = await db.execute(
            select(WebhookDelivery)
            .where(WebhookDelivery.run_id == run_id)
            .order_by(WebhookDelivery.event_seq)
        )
        return list(rows.scalars())


async def settled(repo: Repository, run_id: str, count: int = 1, timeout: float = 30) -> list[Any]:
    """The run's deliveries once `count` of them are delivered or failed (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await deliveries_of(repo, run_id)
        done = [d for d in rows if d.status != WebhookDeliveryStatus.PENDING]
        if len(done) >= count:
            return rows
        assert time.monotonic() < deadline, [(d.status, d.attempts, d.last_error) for d in rows]
        await asyncio.sleep(0.1)


async def tenant_secret(repo: Repository, tenant: str) -> str:
    async with repo.session() as db:
        secret = (
            await db.execute(select(Tenant.webhook_secret).where(Tenant.id == tenant))
        ).scalar_one()
    assert secret
    return str(secret)


def hook(url: str, *events: str) -> dict[str, Any]:
    return {"url": url, "events": list(events)}


# -- delivery end to end ------------------------------------------------------------------------


async def test_an_approval_request_is_delivered_once_with_a_valid_signature(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    dispatcher: WebhookDispatcher,
    hooks: WebhookStore,
    repo: Repository,
    model_server: OfflineModelServer,
    receiver: Receiver,
    run_id: str,
    tenant: str,
) -> None:
    registered, secret = await hooks.add_webhook(tenant, receiver.url, [APPROVAL])
    assert secret is not None and secret == await tenant_secret(repo, tenant)
    prompt = f"list with bash {run_id}"
    model_server.script(prompt, [bash_call("ls"), Reply(text="listed")])
    handle = await start_run(temporal_env, settings, run_id, prompt, tenant)
    event = await next_event(repo, run_id, EventType.TOOL_APPROVAL_REQUESTED, timeout=30)
    [row] = await settled(repo, run_id)
    await handle.cancel()  # the run ends; this webhook does not take run.finished
    assert len(receiver.received) == 1
    got = receiver.received[0]
    verify(secret, got.headers, got.body)
    body = json.loads(got.body)
    assert body["type"] == APPROVAL
    assert body["id"] == got.headers["webhook-id"] == row.id
    assert row.id == delivery_id(registered.id, run_id, event.seq)
    assert (body["tenant"], body["run_id"], body["seq"]) == (tenant, run_id, event.seq)
    assert body["session_id"] == (await repo.get_run(run_id)).session_id
    assert body["data"]["tool_call_id"] == "call_bash"
    assert body["data"] == event.data
    assert (row.status, row.attempts, row.last_status_code) == (DELIVERED, 1, 200)
    assert row.delivered_at is not None and row.webhook_id == registered.id
    # Tampering with what was received breaks the signature.
    with pytest.raises(ValueError, match="no signature matches"):
        verify(secret, got.headers, got.body.replace(b"call_bash", b"call_rm"))


async def test_a_receiver_that_fails_twice_gets_one_accepted_delivery_after_three_attempts(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    dispatcher: WebhookDispatcher,
    repo: Repository,
    model_server: OfflineModelServer,
    receiver: Receiver,
    run_id: str,
    tenant: str,
) -> None:
    receiver.codes = [500, 503]
    prompt = f"say hello {run_id}"
    model_server.script(prompt, [Reply(text="hello")])
    handle = await start_run(
        temporal_env, settings, run_id, prompt, tenant, webhooks=[hook(receiver.url, FINISHED)]
    )
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.status == RunStatus.DONE
    [row] = await settled(repo, run_id)
    flow = temporal_env.client.get_workflow_handle(delivery_workflow_id(row.id))
    assert await asyncio.wait_for(flow.result(), 10) == DELIVERED
    assert [r.answered for r in receiver.received] == [500, 503, 200]
    assert {r.headers["webhook-id"] for r in receiver.received} == {row.id}
    assert len({r.body for r in receiver.received}) == 1  # the same bytes every time
    secret = await tenant_secret(repo, tenant)
    for r in receiver.received:
        verify(secret, r.headers, r.body)
    assert (row.status, row.attempts, row.last_status_code) == (DELIVERED, 3, 200)
    assert row.webhook_id is None and row.url == receiver.url
    body = json.loads(receiver.received[-1].body)
    assert body["type"] == FINISHED and body["data"]["status"] == RunStatus.DONE
    # Dispatched once: another pass starts nothing.
    assert await dispatcher.dispatch_once() == 0


async def test_run_finished_is_delivered_by_a_worker_as_run_worker_wires_it(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    receiver: Receiver,
    run_id: str,
    tenant: str,
) -> None:
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop, migrate=False, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 60)
        prompt = f"answer briefly {run_id}"
        model_server.script(prompt, [Reply(text="brief")])
        handle = await start_run(
            temporal_env, settings, run_id, prompt, tenant, webhooks=[hook(receiver.url, FINISHED)]
        )
        assert (await asyncio.wait_for(handle.result(), 30)).status == RunStatus.DONE
        [row] = await settled(repo, run_id)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    assert (row.status, row.attempts, row.event_type) == (DELIVERED, 1, FINISHED)
    [got] = receiver.received
    body = json.loads(got.body)
    assert body["data"]["status"] == RunStatus.DONE and body["data"]["previous"] == "RUNNING"
    verify(await tenant_secret(repo, tenant), got.headers, got.body)


async def test_a_receiver_that_is_down_or_hangs_never_blocks_or_fails_the_run(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    receiver: Receiver,
    run_id: str,
    tenant: str,
) -> None:
    receiver.hang = True
    dead = f"http://127.0.0.1:{free_port()}/gone"
    prompt = f"say hi {run_id}"
    model_server.script(prompt, [Reply(text="hi")])
    async with delivering(temporal_env, repo, settings, request_timeout_s=20.0):
        handle = await start_run(
            temporal_env,
            settings,
            run_id,
            prompt,
            tenant,
            webhooks=[hook(dead, FINISHED), hook(receiver.url, FINISHED)],
        )
        result = await asyncio.wait_for(handle.result(), 30)
        assert result.status == RunStatus.DONE and result.final_text == "hi"
        rows = await settled(repo, run_id, count=1)
    by_url = {d.url: d for d in rows}
    assert (by_url[dead].status, by_url[dead].attempts) == (FAILED, 3)
    assert "cannot connect" in (by_url[dead].last_error or "")
    # The hanging receiver's first attempt is still waiting for an answer.
    assert (by_url[receiver.url].status, by_url[receiver.url].attempts) == ("pending", 0)
    assert (await repo.get_run(run_id)).status == RunStatus.DONE


async def test_a_private_address_is_refused_without_the_setting(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    receiver: Receiver,
    run_id: str,
    tenant: str,
) -> None:
    strict = settings.model_copy(
        update={"webhook_allow_private": False, "task_queue": f"tq-{uuid.uuid4()}"}
    )
    prompt = f"say ok {run_id}"
    model_server.script(prompt, [Reply(text="ok")])
    w = build_worker(temporal_env.client, strict, repo, graceful_shutdown=timedelta(seconds=1))
    async with w, delivering(temporal_env, repo, strict):
        handle = await start_run(
            temporal_env, strict, run_id, prompt, tenant, webhooks=[hook(receiver.url, FINISHED)]
        )
        assert (await asyncio.wait_for(handle.result(), 30)).status == RunStatus.DONE
        [row] = await settled(repo, run_id)
    assert (row.status, row.attempts, row.last_status_code) == (FAILED, 1, None)
    assert "not a public address" in (row.last_error or "")
    assert "AGENTRUN_WEBHOOK_ALLOW_PRIVATE" in (row.last_error or "")
    assert receiver.received == []


async def test_a_410_removes_the_webhook_and_fails_the_delivery_without_retry(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    dispatcher: WebhookDispatcher,
    hooks: WebhookStore,
    repo: Repository,
    model_server: OfflineModelServer,
    receiver: Receiver,
    run_id: str,
    tenant: str,
) -> None:
    receiver.codes = [410]
    registered, _ = await hooks.add_webhook(tenant, receiver.url, [FINISHED])
    prompt = f"say bye {run_id}"
    model_server.script(prompt, [Reply(text="bye")])
    handle = await start_run(temporal_env, settings, run_id, prompt, tenant)
    assert (await asyncio.wait_for(handle.result(), 30)).status == RunStatus.DONE
    [row] = await settled(repo, run_id)
    assert (row.status, row.attempts, row.last_status_code) == (FAILED, 1, 410)
    assert "gone" in (row.last_error or "")
    assert registered.id not in {h.id for h in await hooks.list_webhooks(tenant)}


# -- the outbox, the CLI, the schema -----------------------------------------------------------


async def open_in_tenant(repo: Repository, tenant: str, **config: Any) -> str:
    """A run of `tenant`, opened as a worker opens one."""
    run_id = f"run-{uuid.uuid4()}"
    await repo.open_run(
        run_id=run_id,
        session_id=f"s-{uuid.uuid4()}",
        model="offline-scripted",
        config=AgentConfig(**config),
        prompt="hello",
        tenant=tenant,
    )
    return run_id


async def forget_deliveries(repo: Repository, *run_ids: str) -> None:
    """No later test's dispatcher should take these undispatched rows."""
    async with repo.transaction() as db:
        await db.execute(delete(WebhookDelivery).where(WebhookDelivery.run_id.in_(run_ids)))


def waiting(call_id: str) -> ToolWaitData:
    return ToolWaitData(
        tool_call_id=call_id, name="bash", arguments="{}", arguments_sha256="x", turn=1
    )


async def test_the_outbox_row_is_written_with_its_event_once_and_notified(
    repo: Repository, hooks: WebhookStore, tenant: str
) -> None:
    both, secret = await hooks.add_webhook(tenant, "https://a.example/in", [APPROVAL, FINISHED])
    assert secret is not None and secret.startswith("whsec_")
    ended, again = await hooks.add_webhook(tenant, "https://b.example/in", [FINISHED])
    assert again is None  # the tenant's secret is made (and shown) once
    gone, _ = await hooks.add_webhook(tenant, "https://c.example/in", [APPROVAL, FINISHED])
    await hooks.remove_webhook(gone.id)
    # The run names a tenant's URL again (announced once) and one of its own.
    own = [hook("https://b.example/in", FINISHED), hook("https://d.example/in", APPROVAL)]
    run_id = await open_in_tenant(repo, tenant, webhooks=own)
    quiet = await open_in_tenant(repo, f"t-{uuid.uuid4().hex[:8]}")
    listener = await psycopg.AsyncConnection.connect(repo.libpq_url, autocommit=True)
    try:
        await listener.execute(f"LISTEN {WEBHOOK_NOTIFY_CHANNEL}")
        key = event_key(EventType.TOOL_APPROVAL_REQUESTED, "c1")
        [first] = await repo.append_events(run_id, [repo_event(waiting("c1"), key)])
        notes = [n async for n in listener.notifies(timeout=5, stop_after=1)]
        assert len(notes) == 1
        [repeat] = await repo.append_events(run_id, [repo_event(waiting("c1"), key)])
        assert repeat.seq == first.seq
        await repo.set_run_status(run_id, RunStatus.RUNNING)
        _, changed = await repo.set_run_status(run_id, RunStatus.DONE)
        assert changed
        _, changed = await repo.set_run_status(run_id, RunStatus.FAILED)  # a late write
        assert not changed
        await repo.set_run_status(quiet, RunStatus.DONE)
        rows = await deliveries_of(repo, run_id)
        done_seq = (await repo.get_run(run_id)).last_event_seq
        got = sorted((d.event_type, d.url, d.event_seq) for d in rows)
        assert got == sorted(
            [
                (APPROVAL, "https://a.example/in", first.seq),
                (APPROVAL, "https://d.example/in", first.seq),
                (FINISHED, "https://a.example/in", done_seq),
                (FINISHED, "https://b.example/in", done_seq),
            ]
        )
        by_url = {(d.url, d.event_type): d for d in rows}
        assert by_url[("https://b.example/in", FINISHED)].webhook_id == ended.id
        assert by_url[("https://a.example/in", APPROVAL)].id == delivery_id(
            both.id, run_id, first.seq
        )
        assert all(d.status == "pending" and d.attempts == 0 and d.tenant == tenant for d in rows)
        finished = by_url[("https://a.example/in", FINISHED)].payload
        assert RunStatusData.model_validate(finished).status == RunStatus.DONE
        assert await deliveries_of(repo, quiet) == []
    finally:
        await listener.close()
        await forget_deliveries(repo, run_id, quiet)


def repo_event(payload: ToolWaitData, key: str) -> EventIn:
    return EventIn.of(payload, key)


async def test_webhooks_cli_adds_lists_shows_deliveries_rotates_and_removes(
    settings: Settings, repo: Repository
) -> None:
    env = cli_env(settings)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    url = "https://hooks.example.com/agentrun"
    added = await agentrun(
        env, "webhooks", "add", url, "--tenant", tenant, "--event", FINISHED, "--json"
    )
    assert added.code == 0, added.err
    [out] = added.json_lines()
    hook_id, first_secret = out["webhook"]["id"], out["secret"]
    assert first_secret.startswith("whsec_") and out["webhook"]["events"] == [FINISHED]
    twice = await agentrun(env, "webhooks", "add", url, "--tenant", tenant, "--event", FINISHED)
    assert twice.code == 2 and "registered already" in twice.err
    assert len(twice.err.strip().splitlines()) == 1
    listed = await agentrun(env, "webhooks", "list", "--tenant", tenant, "--json")
    assert [h["id"] for h in listed.json_lines()[0]["webhooks"]] == [hook_id]
    shown = await agentrun(env, "webhooks", "secret", "--tenant", tenant)
    assert shown.code == 0 and "whsec_" not in shown.out + shown.err
    assert "has a signing secret already" in shown.out
    rotated = await agentrun(env, "webhooks", "secret", "--tenant", tenant, "--rotate", "--json")
    new_secret = rotated.json_lines()[0]["secret"]
    assert new_secret.startswith("whsec_") and new_secret != first_secret
    assert await tenant_secret(repo, tenant) == new_secret

    run_id = await open_in_tenant(repo, tenant)
    try:
        await repo.set_run_status(run_id, RunStatus.CANCELED)
        table = await agentrun(env, "webhooks", "deliveries", "--tenant", tenant)
        assert table.code == 0, table.err
        assert FINISHED in table.out and "pending" in table.out and run_id in table.out
        # For a day after the rotation deliveries are signed with both secrets.
        [row] = await deliveries_of(repo, run_id)
        job = await WebhookStore(repo).job(row.id)
        assert job.secrets == (new_secret, first_secret)
    finally:
        await forget_deliveries(repo, run_id)
    removed = await agentrun(env, "webhooks", "remove", hook_id)
    assert removed.code == 0 and "removed" in removed.out
    again = await agentrun(env, "webhooks", "remove", hook_id)
    assert again.code == 4 and f"no webhook {hook_id!r}" in again.err


def test_the_migrations_make_the_schema_the_models_describe(database_url: str) -> None:
    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


async def test_the_delivery_activity_sends_a_delivered_row_once_and_a_removed_webhooks_never(
    settings: Settings, repo: Repository, receiver: Receiver
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    store = WebhookStore(repo)
    kept, _ = await store.add_webhook(tenant, receiver.url, [FINISHED])
    dropped, _ = await store.add_webhook(tenant, receiver.url + "&other=1", [FINISHED])
    run_id = await open_in_tenant(repo, tenant)
    activities = WebhookActivities(repo, settings)
    try:
        await repo.set_run_status(run_id, RunStatus.DONE)
        await store.remove_webhook(dropped.id, tenant)
        rows = {d.webhook_id: d for d in await deliveries_of(repo, run_id)}
        first = DeliverWebhookInput(delivery_id=rows[kept.id].id)
        assert await activities.deliver_webhook(first) == 200
        assert await activities.deliver_webhook(first) == 200  # a retry after the record
        assert len(receiver.received) == 1
        gone = DeliverWebhookInput(delivery_id=rows[dropped.id].id)
        with pytest.raises(ApplicationError, match="the webhook was removed") as refused:
            await activities.deliver_webhook(gone)
        assert refused.value.non_retryable and len(receiver.received) == 1
        await activities.record_webhook_failure(
            WebhookFailureInput(delivery_id=gone.delivery_id, reason="the webhook was removed")
        )
        await activities.record_webhook_failure(  # a late failure leaves a delivered row be
            WebhookFailureInput(delivery_id=first.delivery_id, reason="late")
        )
        with pytest.raises(ApplicationError, match="recorded failed already"):
            await activities.deliver_webhook(gone)  # ended: never sent
        assert len(receiver.received) == 1
        after = {d.webhook_id: d for d in await deliveries_of(repo, run_id)}
        assert (after[kept.id].status, after[kept.id].attempts) == (DELIVERED, 1)
        assert (after[dropped.id].status, after[dropped.id].attempts) == (FAILED, 0)
        assert after[dropped.id].last_error == "the webhook was removed"
        with pytest.raises(LookupError, match="no webhook"):
            await store.remove_webhook(kept.id, "another-tenant")
    finally:
        await forget_deliveries(repo, run_id)


async def test_a_delivery_another_worker_started_before_it_died_is_not_started_twice(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    receiver: Receiver,
    tenant: str,
) -> None:
    run_id = await open_in_tenant(repo, tenant, webhooks=[hook(receiver.url, FINISHED)])
    await repo.set_run_status(run_id, RunStatus.DONE)
    [row] = await deliveries_of(repo, run_id)
    assert row.dispatched_at is None
    w = build_webhook_worker(temporal_env.client, settings, repo)
    dispatcher = WebhookDispatcher(temporal_env.client, repo, w.task_queue, schedule=FAST)
    async with w:
        # Started, and its worker gone before it marked the row.
        await temporal_env.client.start_workflow(
            WEBHOOK_WORKFLOW_NAME,
            WebhookDeliveryInput(delivery_id=row.id, **FAST),
            id=delivery_workflow_id(row.id),
            task_queue=w.task_queue,
        )
        assert await dispatcher.dispatch_once() >= 1
        assert dispatcher.started == 0  # its start was a no-op
        [row] = await settled(repo, run_id)
    assert row.status == DELIVERED and row.attempts == 1 and row.dispatched_at is not None
    assert len(receiver.received) == 1
    assert await dispatcher.dispatch_once() == 0
