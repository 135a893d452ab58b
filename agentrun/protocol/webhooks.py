"""Webhooks out: the event names a webhook subscribes to, the body a receiver gets, and the
Standard Webhooks signature (https://www.standardwebhooks.com) that proves the body is ours.

A delivery is one POST with the headers

    webhook-id         the delivery id: the same on every retry, the receiver's idempotency key
    webhook-timestamp  unix seconds of this attempt
    webhook-signature  "v1,<base64 HMAC-SHA256(secret, f'{id}.{timestamp}.{body}')>"

where the secret is the tenant's "whsec_<base64 of 32 bytes>" (the HMAC key is the decoded
bytes). A receiver verifies with `verify` (or any Standard Webhooks library) and should refuse
a timestamp far from its clock, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from agentrun.protocol.events import EventType
from agentrun.protocol.statuses import RunStatus

__all__ = [
    "SECRET_PREFIX",
    "WebhookBody",
    "WebhookEvent",
    "WebhookVerificationError",
    "new_secret",
    "sign",
    "url_problem",
    "verify",
    "webhook_event_of",
]

SECRET_PREFIX = "whsec_"
# How far a receiver's clock may be from the timestamp `verify` accepts (Standard Webhooks
# suggests five minutes).
DEFAULT_TOLERANCE_S = 300
MAX_URL_CHARS = 2000


class WebhookEvent(enum.StrEnum):
    """What a webhook can subscribe to: a tool call waits for a person, or a run ended (DONE,
    FAILED or CANCELED; `data` is that run.status event)."""

    TOOL_APPROVAL_REQUESTED = EventType.TOOL_APPROVAL_REQUESTED.value
    RUN_FINISHED = "run.finished"


def webhook_event_of(event_type: str, data: Mapping[str, Any]) -> WebhookEvent | None:
    """The webhook event an appended run event announces, if any."""
    if event_type == EventType.TOOL_APPROVAL_REQUESTED:
        return WebhookEvent.TOOL_APPROVAL_REQUESTED
    if event_type == EventType.RUN_STATUS:
        try:
            status = RunStatus(str(data.get("status")))
        except ValueError:
            return None
        if status.terminal:
            return WebhookEvent.RUN_FINISHED
    return None


class WebhookBody(BaseModel):
    """The JSON a receiver gets. `id` is the delivery id (also the `webhook-id` header);
    `timestamp` is when the event was recorded (ISO 8601); `data` is the event's payload as in
    the event log; `seq` its place in the run's log."""

    model_config = ConfigDict(extra="allow")

    type: WebhookEvent
    id: str
    timestamp: str
    tenant: str
    run_id: str
    session_id: str
    seq: int
    data: dict[str, Any]


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header of `body` sent as `msg_id` at `timestamp`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class WebhookVerificationError(ValueError):
    """A request that is not a genuine, fresh delivery signed with this secret."""


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Raise WebhookVerificationError unless `headers` carry a valid signature of `body`
    made within `tolerance_s` of `now`. Header names are matched case-insensitively."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = (
        lower.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
    )
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not unix seconds") from None
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is too far from now")
    expected = sign(secret, msg_id, timestamp, body).encode()
    # The header may list several space-separated signatures (one per secret while rotating).
    if not any(hmac.compare_digest(expected, s.encode()) for s in signatures.split()):
        raise WebhookVerificationError("no signature matches")


def url_problem(url: str) -> str | None:
    """What is wrong with a webhook URL, or None: http(s), a host, no credentials, no
    fragment, at most 2,000 printable characters. Where it may point is checked when it is
    called (the worker refuses private addresses, see AGENTRUN_WEBHOOK_ALLOW_PRIVATE)."""
    if len(url) > MAX_URL_CHARS:
        return f"a webhook URL has at most {MAX_URL_CHARS} characters"
    if not url.isprintable() or any(c.isspace() for c in url):
        return "a webhook URL has no spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"a webhook URL is http:// or https:// with a host, not {url[:100]!r}"
    if parts.username is not None or parts.password is not None:
        return "a webhook URL carries no user or password (the signature authenticates us)"
    if parts.fragment:
        return "a webhook URL has no #fragment"
    return None
