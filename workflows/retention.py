"""The retention workflow: started by the retention schedule (agentrun/retention.py), it
deletes sessions idle for longer than the setting says, a batch per activity, until a batch
comes back short (or deletes nothing, or max_batches); then, when the input asks for it, the
webhook deliveries that ended longer ago than their own setting, the same way."""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

from agentrun.contracts.retention import (
    DeliveryPruneInput,
    RetentionBatchInput,
    RetentionInput,
    RetentionResult,
    RetentionSummary,
)
from agentrun.protocol.names import RETENTION_WORKFLOW_NAME, Activity

T = TypeVar("T")


async def _batch(name: str, arg: object, result_type: type[T]) -> T:
    result: T = await workflow.execute_activity(
        name,
        arg,
        result_type=result_type,
        start_to_close_timeout=timedelta(minutes=30),
        # A database that stays down ends the batch (the next hour's run tries again) instead
        # of retrying it for ever.
        schedule_to_close_timeout=timedelta(hours=2),
        heartbeat_timeout=timedelta(minutes=2),
        retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=5)),
    )
    return result


@workflow.defn(name=RETENTION_WORKFLOW_NAME)
class SessionRetentionWorkflow:
    @workflow.run
    async def run(self, inp: RetentionInput) -> RetentionSummary:
        summary = RetentionSummary()
        if inp.idle_days is not None:
            await self._sessions(inp, inp.idle_days, summary)
        if inp.delivery_days is not None:
            await self._deliveries(inp, inp.delivery_days, summary)
        return summary

    async def _sessions(self, inp: RetentionInput, days: float, summary: RetentionSummary) -> None:
        # The cutoff is fixed once per run (workflow time: deterministic on replay).
        idle_before = workflow.now() - timedelta(days=days)
        for _ in range(inp.max_batches):
            batch = await _batch(
                Activity.DELETE_IDLE_SESSIONS,
                RetentionBatchInput(idle_before=idle_before, limit=inp.batch),
                RetentionResult,
            )
            summary.batches += 1
            summary.deleted += len(batch.deleted)
            summary.skipped += len(batch.skipped)
            if not batch.deleted or len(batch.deleted) + len(batch.skipped) < inp.batch:
                break

    async def _deliveries(
        self, inp: RetentionInput, days: float, summary: RetentionSummary
    ) -> None:
        before = workflow.now() - timedelta(days=days)
        for _ in range(inp.max_batches):
            gone = await _batch(
                Activity.PRUNE_WEBHOOK_DELIVERIES,
                DeliveryPruneInput(before=before, limit=inp.delivery_batch),
                int,
            )
            summary.deliveries_deleted += gone
            if gone < inp.delivery_batch:
                break
