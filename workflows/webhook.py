"""agentrun.WebhookDelivery: one webhook delivery, retried with backoff, its end recorded.

A workflow of its own (id "webhook-<delivery id>", started by the workers' dispatcher), never a
child of a run: a run neither waits for its webhooks nor fails with them. The delivery activity
records each attempt; when it gives up (a non-retryable answer, or the attempts or the time run
out) a second activity records the delivery as failed.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.webhooks import WebhookActivities
    from agentrun.contracts.webhooks import (
        DeliverWebhookInput,
        WebhookDeliveryInput,
        WebhookFailureInput,
    )
    from agentrun.protocol.names import WEBHOOK_WORKFLOW_NAME
    from agentrun.protocol.statuses import WebhookDeliveryStatus

__all__ = ["WebhookDeliveryWorkflow", "delivery_deadline"]

RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10)
)


def delivery_deadline(inp: WebhookDeliveryInput) -> timedelta:
    """Every attempt's timeout plus every wait between attempts, and a minute of slack."""
    waits, interval = 0.0, inp.initial_interval_s
    for _ in range(inp.max_attempts - 1):
        waits += min(interval, inp.max_interval_s)
        interval *= inp.backoff
    attempt_s = inp.request_timeout_s + 30
    return timedelta(seconds=waits + attempt_s * inp.max_attempts + 60)


@workflow.defn(name=WEBHOOK_WORKFLOW_NAME)
class WebhookDeliveryWorkflow:
    @workflow.run
    async def run(self, inp: WebhookDeliveryInput) -> WebhookDeliveryStatus:
        try:
            await workflow.execute_activity_method(
                WebhookActivities.deliver_webhook,
                DeliverWebhookInput(
                    delivery_id=inp.delivery_id, request_timeout_s=inp.request_timeout_s
                ),
                start_to_close_timeout=timedelta(seconds=inp.request_timeout_s + 30),
                schedule_to_close_timeout=delivery_deadline(inp),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=inp.initial_interval_s),
                    backoff_coefficient=inp.backoff,
                    maximum_interval=timedelta(seconds=inp.max_interval_s),
                    maximum_attempts=inp.max_attempts,
                    non_retryable_error_types=["NotFoundError", "DataError"],
                ),
                summary="POST webhook",
            )
            return WebhookDeliveryStatus.DELIVERED
        except ActivityError as err:
            reason = _reason(err, inp.max_attempts)
        await workflow.execute_activity_method(
            WebhookActivities.record_webhook_failure,
            WebhookFailureInput(delivery_id=inp.delivery_id, reason=reason),
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=timedelta(minutes=10),
            retry_policy=RECORD_RETRY,
            summary="record failure",
        )
        return WebhookDeliveryStatus.FAILED


def _reason(err: ActivityError, max_attempts: int) -> str:
    cause = err.cause
    if isinstance(cause, TimeoutError):
        return "gave up: the delivery's time ran out"
    message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
    if isinstance(cause, ApplicationError) and not cause.non_retryable:
        return f"gave up after {max_attempts} attempts: {message}"
    return message
