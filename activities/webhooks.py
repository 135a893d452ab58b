"""The webhook delivery activities: one signed POST per attempt, every attempt recorded, and the
final failure when no attempt is left. Registered under agentrun.protocol.names.Activity names.

Safe to retry: a delivery that is recorded delivered (or failed) is not sent again. A receiver
may still see one delivery twice (it answered 2xx, and the record of that was lost with the
worker), which is why every delivery carries its id: `webhook-id` is the receiver's
idempotency key.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.webhook_http import AddressRefused, post, verdict
from agentrun.contracts.webhooks import DeliverWebhookInput, WebhookFailureInput
from agentrun.protocol.names import Activity
from agentrun.protocol.statuses import WebhookDeliveryStatus
from agentrun.protocol.webhooks import WebhookBody, sign
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.store.webhooks import DeliveryJob, WebhookStore

__all__ = ["WebhookActivities", "body_of"]

# The longest wait a receiver's Retry-After gets (the retry policy's own maximum is 5 minutes).
MAX_RETRY_AFTER_S = 300.0


def body_of(job: DeliveryJob) -> bytes:
    """The body of a delivery: the same bytes on every attempt."""
    d = job.delivery
    body = WebhookBody(
        type=d.event_type,  # type: ignore[arg-type]
        id=d.id,
        timestamp=d.created_at.isoformat(),
        tenant=d.tenant,
        run_id=d.run_id,
        session_id=d.session_id,
        seq=d.event_seq,
        data=d.payload,
    )
    return json.dumps(body.model_dump(mode="json"), separators=(",", ":")).encode()


def _refused(message: str, type_name: str) -> ApplicationError:
    return ApplicationError(message, type=type_name, non_retryable=True)


class WebhookActivities:
    def __init__(self, repo: Repository, settings: Settings) -> None:
        self.store = WebhookStore(repo)
        self.settings = settings

    @activity.defn(name=Activity.DELIVER_WEBHOOK)
    async def deliver_webhook(self, inp: DeliverWebhookInput) -> int:
        """POST the delivery once; returns the receiver's status code. Raises a retryable
        ApplicationError for 408, 429, 5xx, a timeout or a connection error, a non-retryable
        one for 410 (the webhook is removed), any other answer, a refused address, or a
        removed webhook."""
        job = await self.store.job(inp.delivery_id)
        status = job.delivery.status
        if status == WebhookDeliveryStatus.DELIVERED:
            # Recorded already (an earlier attempt's record outlived its answer): not again.
            return job.delivery.last_status_code or 0
        if status != WebhookDeliveryStatus.PENDING:
            raise _refused(f"the delivery is recorded {status} already", "WebhookEnded")
        if job.webhook_removed:
            raise _refused("the webhook was removed", "WebhookRemoved")
        body = body_of(job)
        stamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": job.delivery.id,
            "webhook-timestamp": str(stamp),
            # One signature per secret, space-separated (Standard Webhooks): a receiver that
            # still has the secret from before a rotation keeps verifying for a day.
            "webhook-signature": " ".join(
                sign(k, job.delivery.id, stamp, body) for k in job.secrets
            ),
        }
        try:
            answer = await post(
                job.delivery.url,
                body,
                headers,
                timeout_s=inp.request_timeout_s,
                allow_private=self.settings.webhook_allow_private,
            )
        except AddressRefused as exc:
            await self._attempt(inp.delivery_id, None, str(exc))
            raise _refused(str(exc), "WebhookAddressRefused") from None
        except (OSError, httpx.TransportError, TimeoutError) as exc:
            error = _transport_error(exc, inp.request_timeout_s)
            await self._attempt(inp.delivery_id, None, error)
            raise ApplicationError(error, type="WebhookUnreachable") from None
        code = answer.status_code
        outcome = verdict(code)
        if outcome == "delivered":
            await self._attempt(inp.delivery_id, code, None, delivered=True)
            return code
        await self._attempt(inp.delivery_id, code, f"HTTP {code}", gone=outcome == "gone")
        if outcome == "gone":
            raise _refused("HTTP 410: the receiver says the webhook is gone", "WebhookGone")
        if outcome == "refused":
            raise _refused(f"HTTP {code}: no retry changes this answer", "WebhookRefused")
        delay = answer.retry_after_s
        raise ApplicationError(
            f"HTTP {code}",
            type="WebhookRetry",
            next_retry_delay=(
                timedelta(seconds=min(delay, MAX_RETRY_AFTER_S)) if delay is not None else None
            ),
        )

    async def _attempt(
        self,
        delivery: str,
        code: int | None,
        error: str | None,
        *,
        delivered: bool = False,
        gone: bool = False,
    ) -> None:
        await self.store.record_attempt(
            delivery, status_code=code, error=error, delivered=delivered, gone=gone
        )

    @activity.defn(name=Activity.RECORD_WEBHOOK_FAILURE)
    async def record_webhook_failure(self, inp: WebhookFailureInput) -> None:
        await self.store.record_failure(inp.delivery_id, inp.reason)


def _transport_error(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return f"no answer within {timeout_s:g}s"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect: {exc or type(exc).__name__}"
    if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
        return f"cannot resolve the host: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"
