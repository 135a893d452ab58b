"""The webhook dispatcher: a task in each worker process that turns outbox rows into
agentrun.WebhookDelivery workflows.

It wakes on NOTIFY (agentrun.protocol.names.WEBHOOK_NOTIFY_CHANNEL, sent when a delivery row
commits) and polls as a fallback, takes undispatched rows with SKIP LOCKED (so the workers of a
fleet share them) and starts one workflow per row with id "webhook-<delivery id>": starting it
twice is a no-op (REJECT_DUPLICATE), so a worker that dies between the start and the mark
costs nothing. The run that wrote the row never waits for any of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import psycopg
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from agentrun.contracts.webhooks import WebhookDeliveryInput
from agentrun.protocol.names import WEBHOOK_NOTIFY_CHANNEL, WEBHOOK_WORKFLOW_NAME
from agentrun.store import Repository
from agentrun.store.webhooks import WebhookStore

__all__ = ["WebhookDispatcher", "delivery_workflow_id", "webhook_task_queue"]

log = logging.getLogger("agentrun.webhooks")


def delivery_workflow_id(delivery_id: str) -> str:
    return f"webhook-{delivery_id}"


def webhook_task_queue(task_queue: str) -> str:
    """The task queue of the deliveries of a worker of `task_queue` (worker.py)."""
    return f"{task_queue}-webhooks"


class WebhookDispatcher:
    """`start()` it next to a worker and `close()` it before the worker stops. It starts
    deliveries on `task_queue` (a webhook worker's, see worker.build_webhook_worker);
    `schedule` sets their retry schedule (WebhookDeliveryInput's fields)."""

    def __init__(
        self,
        client: Client,
        repo: Repository,
        task_queue: str,
        *,
        poll_interval: float = 5.0,
        batch_size: int = 50,
        schedule: dict[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.repo = repo
        self.task_queue = task_queue
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.schedule = dict(schedule or {})
        WebhookDeliveryInput(delivery_id="check", **self.schedule)  # a bad schedule fails here
        self._store = WebhookStore(repo)
        self._task: asyncio.Task[None] | None = None
        self.started = 0  # workflows this dispatcher started (a duplicate start not counted)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> WebhookDispatcher:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def dispatch_once(self) -> int:
        """Start the workflows of every undispatched delivery; returns how many rows."""
        total = 0
        while True:
            n = await self._store.dispatch_batch(self.batch_size, self._start_all)
            total += n
            if n < self.batch_size:
                return total

    async def _run(self) -> None:
        listener: psycopg.AsyncConnection[Any] | None = None
        failures = 0
        try:
            while True:
                if listener is None or listener.closed:
                    listener = await _listen(self.repo.libpq_url)
                try:
                    await self.dispatch_once()
                    failures = 0
                except Exception as exc:  # Temporal or PostgreSQL away: try again later
                    failures += 1
                    log.warning("webhook dispatcher: %s: %s", type(exc).__name__, exc)
                    await asyncio.sleep(min(self.poll_interval * failures, 60))
                    continue
                await _wait(listener, self.poll_interval)
        finally:
            if listener is not None:
                await listener.close()

    async def _start_all(self, ids: Sequence[str]) -> None:
        await asyncio.gather(*(self._start(i) for i in ids))

    async def _start(self, delivery_id: str) -> None:
        try:
            await self.client.start_workflow(
                WEBHOOK_WORKFLOW_NAME,
                WebhookDeliveryInput(delivery_id=delivery_id, **self.schedule),
                id=delivery_workflow_id(delivery_id),
                task_queue=self.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                static_summary=f"webhook delivery {delivery_id}",
                # The batch's row locks are held meanwhile: a slow frontend fails the batch.
                rpc_timeout=timedelta(seconds=10),
            )
            self.started += 1
        except WorkflowAlreadyStartedError:
            pass  # started before this worker could mark it: nothing to do


async def _listen(libpq_url: str) -> psycopg.AsyncConnection[Any] | None:
    try:
        conn = await psycopg.AsyncConnection.connect(libpq_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError:
        return None
    try:
        await conn.execute(f"LISTEN {WEBHOOK_NOTIFY_CHANNEL}")
    except psycopg.OperationalError:
        await conn.close()
        return None
    return conn


async def _wait(listener: psycopg.AsyncConnection[Any] | None, timeout: float) -> None:
    """Until a notification arrives (all that are queued are taken) or `timeout` passes."""
    if listener is None:
        await asyncio.sleep(timeout)
        return
    try:
        async for _ in listener.notifies(timeout=timeout, stop_after=1):
            break
    except psycopg.OperationalError:
        await listener.close()
        await asyncio.sleep(timeout)
