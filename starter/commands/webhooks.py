"""webhooks list, add, remove, deliveries and secret: a tenant's webhooks out (README
"Webhooks"). Only the database is needed; workers deliver."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from agentrun.db.models import DEFAULT_TENANT, Webhook, WebhookDelivery
from agentrun.store import NotFoundError
from agentrun.store.webhooks import WebhookStore
from starter.connect import database, settings_or_exit
from starter.exits import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, CliError
from starter.output import console, err_console, print_json

SECRET_NOTE = (
    "shown once: keep it where your receiver verifies `webhook-signature` (README Webhooks)"
)


def _hook(w: Webhook) -> dict[str, Any]:
    return {
        "id": w.id,
        "tenant": w.tenant,
        "url": w.url,
        "events": list(w.events),
        "created_at": w.created_at.isoformat() if w.created_at else None,
    }


def _delivery(d: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "tenant": d.tenant,
        "webhook_id": d.webhook_id,
        "url": d.url,
        "event": d.event_type,
        "run_id": d.run_id,
        "seq": d.event_seq,
        "status": d.status,
        "attempts": d.attempts,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "created_at": d.created_at.isoformat(),
        "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None,
    }


async def cmd_webhooks(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    async with database(settings) as repo:
        store = WebhookStore(repo)
        try:
            action = _ACTIONS[args.webhooks_command]
            await action(store, args)
        except NotFoundError as exc:
            raise CliError(
                f"{exc}; list them with `agentrun webhooks list`", EXIT_NOT_FOUND
            ) from None
        except ValueError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
    return EXIT_OK


async def _list(store: WebhookStore, args: argparse.Namespace) -> None:
    hooks = await store.list_webhooks(args.tenant)
    if args.json:
        print_json({"webhooks": [_hook(w) for w in hooks]})
        return
    if not hooks:
        console.print("no webhooks; add one with `agentrun webhooks add URL --event ...`")
        return
    table = Table("id", "tenant", "events", "url", "created")
    for w in hooks:
        created = w.created_at.strftime("%Y-%m-%d %H:%M") if w.created_at else ""
        table.add_row(w.id, w.tenant, ", ".join(w.events), w.url, created)
    console.print(table)


async def _add(store: WebhookStore, args: argparse.Namespace) -> None:
    tenant = args.tenant or DEFAULT_TENANT
    hook, secret = await store.add_webhook(tenant, args.url, args.events)
    if args.json:
        print_json({"webhook": _hook(hook), "secret": secret})
        return
    console.print(f"webhook {hook.id} of tenant {tenant}: {', '.join(hook.events)} -> {hook.url}")
    if secret is not None:
        console.print(f"tenant {tenant}'s signing secret: {secret}", soft_wrap=True)
        err_console.print(SECRET_NOTE)


async def _remove(store: WebhookStore, args: argparse.Namespace) -> None:
    hook = await store.remove_webhook(args.webhook_id, args.tenant)
    if args.json:
        print_json({"removed": _hook(hook)})
    else:
        console.print(f"webhook {hook.id} removed; its pending deliveries end as failed")


async def _deliveries(store: WebhookStore, args: argparse.Namespace) -> None:
    rows = await store.deliveries(tenant=args.tenant, run_id=args.run, limit=args.limit)
    if args.json:
        print_json({"deliveries": [_delivery(d) for d in rows]})
        return
    if not rows:
        console.print("no deliveries")
        return
    table = Table("id", "event", "run", "seq", "status", "attempts", "last", "url")
    for d in rows:
        last = str(d.last_status_code) if d.last_status_code is not None else ""
        if d.last_error and d.status != "delivered":
            last = f"{last} {d.last_error}".strip()
        table.add_row(
            d.id, d.event_type, d.run_id, str(d.event_seq), d.status, str(d.attempts), last, d.url
        )
    console.print(table)


async def _secret(store: WebhookStore, args: argparse.Namespace) -> None:
    tenant = args.tenant or DEFAULT_TENANT
    secret = await store.tenant_secret(tenant, rotate=args.rotate)
    if args.json:
        print_json({"tenant": tenant, "secret": secret, "rotated": bool(args.rotate)})
    elif secret is None:
        console.print(
            f"tenant {tenant} has a signing secret already (it is shown once); "
            "`--rotate` replaces it with a new one"
        )
    else:
        console.print(secret, soft_wrap=True)
        err_console.print(
            SECRET_NOTE + ("; deliveries from now on are signed with it" if args.rotate else "")
        )


_ACTIONS = {
    "list": _list,
    "add": _add,
    "remove": _remove,
    "deliveries": _deliveries,
    "secret": _secret,
}
