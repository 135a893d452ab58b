"""The retention workflow: started by the retention schedule (agentrun/retention.py), it
deletes sessions idle for longer than the setting says, a batch per activity, until a batch
comes back short (or deletes nothing, or max_batches)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from agentrun.contracts.retention import (
    RetentionBatchInput,
    RetentionInput,
    RetentionResult,
    RetentionSummary,
)
from agentrun.protocol.names import RETENTION_WORKFLOW_NAME, Activity


@workflow.defn(name=RETENTION_WORKFLOW_NAME)
class SessionRetentionWorkflow:
    @workflow.run
    async def run(self, inp: RetentionInput) -> RetentionSummary:
        # The cutoff is fixed once per run (workflow time: deterministic on replay).
        idle_before = workflow.now() - timedelta(days=inp.idle_days)
        summary = RetentionSummary()
        for _ in range(inp.max_batches):
            batch = await workflow.execute_activity(
                Activity.DELETE_IDLE_SESSIONS,
                RetentionBatchInput(idle_before=idle_before, limit=inp.batch),
                result_type=RetentionResult,
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=5)),
            )
            summary.batches += 1
            summary.deleted += len(batch.deleted)
            summary.skipped += len(batch.skipped)
            if not batch.deleted or len(batch.deleted) + len(batch.skipped) < inp.batch:
                break
        return summary
