"""Webhooks out: registrations, the tenant's signing secret, and the delivery outbox.

`enqueue` runs inside append_locked: when a run's events announce a webhook event (a tool call
waits for approval, the run ended) it inserts one webhook_deliveries row per matching webhook in
the same transaction as the event, with an id derived from the webhook, the run and the event's
seq, so a retried write adds nothing; then NOTIFY wakes the workers' dispatcher, which starts
one agentrun.WebhookDelivery workflow per row (activities/webhook_dispatch.py). Events of other
kinds cost nothing here; an announcing event costs one indexed query of the tenant's webhooks.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from agentrun.contracts.run import TENANT_PATTERN
from agentrun.db.models import Run, RunEvent, Tenant, Webhook, WebhookDelivery
from agentrun.protocol.names import WEBHOOK_NOTIFY_CHANNEL
from agentrun.protocol.statuses import WebhookDeliveryStatus
from agentrun.protocol.webhooks import WebhookEvent, new_secret, url_problem, webhook_event_of
from agentrun.store.engine import Engine, NotFoundError, utcnow

__all__ = [
    "MAX_WEBHOOKS_PER_TENANT",
    "DeliveryJob",
    "WebhookStore",
    "delivery_id",
    "enqueue",
    "parse_events",
]

_TENANT = re.compile(TENANT_PATTERN)
MAX_WEBHOOKS_PER_TENANT = 20
# A run's config may name this many URLs of its own (AgentConfig.webhooks).
MAX_RUN_WEBHOOKS = 8
PENDING = WebhookDeliveryStatus.PENDING.value
# After a rotation, deliveries are signed with the old secret too for this long, so receivers
# can move to the new one without refusing a delivery.
ROTATION_OVERLAP = timedelta(hours=24)


def delivery_id(target: str, run_id: str, seq: int) -> str:
    """The delivery's id (and the receiver's idempotency key): the same for the same webhook
    (its id, or the URL of a run's own webhook) and event, so a repeated write is a no-op."""
    digest = hashlib.sha256(f"{target}\0{run_id}\0{seq}".encode()).hexdigest()
    return f"msg_{digest[:40]}"


def parse_events(names: Iterable[str]) -> list[WebhookEvent]:
    """Event names as given by a person; ValueError naming the ones this agentrun lacks."""
    out: list[WebhookEvent] = []
    for name in names:
        try:
            event = WebhookEvent(name)
        except ValueError:
            known = ", ".join(e.value for e in WebhookEvent)
            raise ValueError(f"unknown webhook event {name!r}; known: {known}") from None
        if event not in out:
            out.append(event)
    if not out:
        raise ValueError("a webhook subscribes to at least one event")
    return out


def check_tenant(tenant: str) -> str:
    if not _TENANT.match(tenant):
        raise ValueError(f"a tenant is 1 to 100 of A-Z a-z 0-9 . _ -, not {tenant[:100]!r}")
    return tenant


# -- the outbox ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    key: str  # the webhook's id, or a run's own URL
    webhook_id: str | None
    url: str
    events: frozenset[str]


def _run_targets(config: dict[str, Any] | None) -> list[_Target]:
    """The run's own webhooks (AgentConfig.webhooks), checked again: a payload decoded in the
    worker skipped the client-side checks, and a bad entry is skipped, not fatal."""
    entries = (config or {}).get("webhooks") or []
    out: list[_Target] = []
    for entry in entries[:MAX_RUN_WEBHOOKS] if isinstance(entries, list) else []:
        url = entry.get("url") if isinstance(entry, dict) else None
        events = entry.get("events") if isinstance(entry, dict) else None
        if not isinstance(url, str) or url_problem(url) or not isinstance(events, list):
            continue
        known = frozenset(e for e in events if e in {w.value for w in WebhookEvent})
        out.append(_Target(url, None, url, known))
    return out


async def _targets(db: AsyncSession, run: Run) -> list[_Target]:
    rows = await db.execute(
        select(Webhook.id, Webhook.url, Webhook.events).where(
            Webhook.tenant == run.tenant, Webhook.removed_at.is_(None)
        )
    )
    found = [_Target(wid, wid, url, frozenset(events)) for wid, url, events in rows]
    urls = {t.url for t in found}
    # A run's URL that the tenant registered already is announced once, as the tenant's.
    return found + [t for t in _run_targets(run.config) if t.url not in urls]


async def enqueue(db: AsyncSession, run: Run, added: Sequence[RunEvent]) -> int:
    """Outbox rows for the events just appended to `run` (its row locked by the caller);
    returns how many were new. Called by agentrun.store.events.append_locked."""
    announced = [(e, w) for e in added if (w := webhook_event_of(e.type, e.data)) is not None]
    if not announced:
        return 0
    targets = await _targets(db, run)
    rows = [
        {
            "id": delivery_id(t.key, run.id, event.seq),
            "tenant": run.tenant,
            "webhook_id": t.webhook_id,
            "url": t.url,
            "run_id": run.id,
            "session_id": run.session_id,
            "event_seq": event.seq,
            "event_type": kind.value,
            "payload": event.data,
        }
        for event, kind in announced
        for t in targets
        if kind.value in t.events
    ]
    if not rows:
        return 0
    stmt = insert(WebhookDelivery).on_conflict_do_nothing(index_elements=["id"])
    new = (await db.execute(stmt.returning(WebhookDelivery.id), rows)).scalars().all()
    if new:
        # Delivered at commit: the dispatcher finds the rows when it wakes.
        await db.execute(text("SELECT pg_notify(:c, '')"), {"c": WEBHOOK_NOTIFY_CHANNEL})
    return len(new)


# -- registrations, secrets, deliveries ------------------------------------------------------


@dataclass(frozen=True)
class DeliveryJob:
    """What one delivery attempt needs: the row, whether its webhook still stands, and the
    secrets to sign with (the tenant's, then the one it replaced within ROTATION_OVERLAP)."""

    delivery: WebhookDelivery
    webhook_removed: bool
    secrets: tuple[str, ...]


class WebhookStore:
    """Webhook registrations and deliveries over the store's engine (a Repository is one)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def add_webhook(
        self, tenant: str, url: str, events: Iterable[str]
    ) -> tuple[Webhook, str | None]:
        """Register `url` for `events`; returns (webhook, the tenant's secret if this call
        created it, else None). ValueError for a bad tenant, URL or event, a URL the tenant
        has registered already, or too many webhooks."""
        check_tenant(tenant)
        problem = url_problem(url)
        if problem:
            raise ValueError(problem)
        kinds = [e.value for e in parse_events(events)]
        async with self._engine.transaction() as db:
            created = await _ensure_secret(db, tenant, lock=True)
            live = list(
                (
                    await db.execute(
                        select(Webhook).where(
                            Webhook.tenant == tenant, Webhook.removed_at.is_(None)
                        )
                    )
                ).scalars()
            )
            same = next((w for w in live if w.url == url), None)
            if same is not None:
                raise ValueError(f"tenant {tenant!r} has this URL registered already: {same.id}")
            if len(live) >= MAX_WEBHOOKS_PER_TENANT:
                raise ValueError(f"tenant {tenant!r} has {len(live)} webhooks, the most allowed")
            hook = Webhook(id=f"wh_{secrets.token_hex(8)}", tenant=tenant, url=url, events=kinds)
            db.add(hook)
            await db.flush()
            await db.refresh(hook)
            return hook, created

    async def list_webhooks(self, tenant: str | None = None) -> list[Webhook]:
        """Live webhooks, oldest first."""
        stmt = select(Webhook).where(Webhook.removed_at.is_(None))
        if tenant is not None:
            stmt = stmt.where(Webhook.tenant == tenant)
        async with self._engine.session() as db:
            return list((await db.execute(stmt.order_by(Webhook.created_at, Webhook.id))).scalars())

    async def remove_webhook(self, webhook_id: str, tenant: str | None = None) -> Webhook:
        """Stop announcing to a webhook (its pending deliveries end as failed); NotFoundError
        for an unknown or already removed id, or another tenant's."""
        async with self._engine.transaction() as db:
            hook = await db.get(Webhook, webhook_id, with_for_update=True)
            if hook is None or hook.removed_at is not None or tenant not in (None, hook.tenant):
                raise NotFoundError(f"no webhook {webhook_id!r}")
            hook.removed_at = utcnow()
            return hook

    async def tenant_secret(self, tenant: str, *, rotate: bool = False) -> str | None:
        """The tenant's new secret if this call made one (the first time, or `rotate`), else
        None: an existing secret is not shown again."""
        check_tenant(tenant)
        async with self._engine.transaction() as db:
            created = await _ensure_secret(db, tenant, lock=True)
            if created is not None or not rotate:
                return created
            fresh = new_secret()
            await db.execute(
                update(Tenant)
                .where(Tenant.id == tenant)
                .values(
                    webhook_secret=fresh,
                    webhook_secret_previous=Tenant.webhook_secret,
                    webhook_secret_rotated_at=func.now(),
                )
            )
            return fresh

    async def deliveries(
        self, *, tenant: str | None = None, run_id: str | None = None, limit: int = 50
    ) -> list[WebhookDelivery]:
        """The most recent deliveries first."""
        stmt = select(WebhookDelivery)
        if tenant is not None:
            stmt = stmt.where(WebhookDelivery.tenant == tenant)
        if run_id is not None:
            stmt = stmt.where(WebhookDelivery.run_id == run_id)
        stmt = stmt.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.event_seq.desc())
        async with self._engine.session() as db:
            return list((await db.execute(stmt.limit(limit))).scalars())

    # -- the dispatcher and the delivery activities ------------------------------------------

    async def dispatch_batch(self, limit: int, start: Any) -> int:
        """Take up to `limit` deliveries no worker has started, await `start(ids)` (which
        starts their workflows; a start already made is a no-op there), then mark them.
        SKIP LOCKED lets several workers share the outbox; a worker that dies mid-batch
        leaves its rows to the next (the row locks go with its transaction)."""
        async with self._engine.transaction() as db:
            ids = list(
                (
                    await db.execute(
                        select(WebhookDelivery.id)
                        .where(
                            WebhookDelivery.status == PENDING,
                            WebhookDelivery.dispatched_at.is_(None),
                        )
                        .order_by(WebhookDelivery.created_at)
                        .limit(limit)
                        .with_for_update(skip_locked=True)
                    )
                ).scalars()
            )
            if not ids:
                return 0
            await start(ids)
            await db.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_(ids))
                .values(dispatched_at=func.now())
            )
            return len(ids)

    async def prune_deliveries(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` deliveries that have ended (delivered or failed) and were
        created before `before`, oldest first; pending ones are never touched. Returns how
        many went (fewer than `limit`: nothing more to prune). SKIP LOCKED: a delivery being
        recorded now is left for the next batch."""
        ended = (WebhookDeliveryStatus.DELIVERED.value, WebhookDeliveryStatus.FAILED.value)
        async with self._engine.transaction() as db:
            ids = (
                select(WebhookDelivery.id)
                .where(WebhookDelivery.status.in_(ended), WebhookDelivery.created_at < before)
                .order_by(WebhookDelivery.created_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
                .scalar_subquery()
            )
            gone = await db.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids)))
            return int(gone.rowcount or 0)  # type: ignore[attr-defined]

    async def job(self, delivery: str) -> DeliveryJob:
        """The delivery, its webhook's state and the tenant's secret (made now if the tenant
        has none: deliveries are always signed)."""
        async with self._engine.transaction() as db:
            row = await db.get(WebhookDelivery, delivery)
            if row is None:
                raise NotFoundError(f"no webhook delivery {delivery!r}")
            removed = False
            if row.webhook_id is not None:
                hook = await db.get(Webhook, row.webhook_id)
                removed = hook is None or hook.removed_at is not None
            await _ensure_secret(db, row.tenant, lock=False)
            tenant = (await db.execute(select(Tenant).where(Tenant.id == row.tenant))).scalar_one()
            keys = [tenant.webhook_secret or ""]
            rotated = tenant.webhook_secret_rotated_at
            if tenant.webhook_secret_previous and rotated and utcnow() - rotated < ROTATION_OVERLAP:
                keys.append(tenant.webhook_secret_previous)
            return DeliveryJob(row, removed, tuple(keys))

    async def record_attempt(
        self,
        delivery: str,
        *,
        status_code: int | None,
        error: str | None,
        delivered: bool,
        gone: bool = False,
    ) -> None:
        """Count one attempt and its outcome; `gone` (a 410) also removes the webhook."""
        values: dict[str, Any] = {
            "attempts": WebhookDelivery.attempts + 1,
            "last_status_code": status_code,
            "last_error": None if error is None else error[:2000],
            "updated_at": func.now(),
        }
        if delivered:
            values |= {"status": WebhookDeliveryStatus.DELIVERED.value, "delivered_at": func.now()}
        async with self._engine.transaction() as db:
            row = await db.get(WebhookDelivery, delivery, with_for_update=True)
            if row is None or row.status != PENDING:
                return
            await db.execute(
                update(WebhookDelivery).where(WebhookDelivery.id == delivery).values(**values)
            )
            if gone and row.webhook_id is not None:
                await db.execute(
                    update(Webhook)
                    .where(Webhook.id == row.webhook_id, Webhook.removed_at.is_(None))
                    .values(removed_at=func.now())
                )

    async def record_failure(self, delivery: str, reason: str) -> None:
        """The delivery's final state when no more attempts follow; a delivered row stays."""
        async with self._engine.transaction() as db:
            await db.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery, WebhookDelivery.status == PENDING)
                .values(
                    status=WebhookDeliveryStatus.FAILED.value,
                    last_error=reason[:2000],
                    updated_at=func.now(),
                )
            )


async def _ensure_secret(db: AsyncSession, tenant: str, *, lock: bool) -> str | None:
    """Give the tenant a secret if it has none; returns the one made here, else None."""
    await db.execute(insert(Tenant).values(id=tenant).on_conflict_do_nothing(index_elements=["id"]))
    fresh = new_secret()
    made = (
        await db.execute(
            update(Tenant)
            .where(Tenant.id == tenant, Tenant.webhook_secret.is_(None))
            .values(webhook_secret=fresh)
            .returning(Tenant.id)
        )
    ).scalar_one_or_none()
    if made is None and lock:
        await db.execute(select(Tenant.id).where(Tenant.id == tenant).with_for_update())
    return fresh if made is not None else None
