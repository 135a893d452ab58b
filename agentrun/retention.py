"""The retention schedule: one Temporal schedule per task queue that starts the retention
workflow (workflows/retention.py) every hour. Workers keep it in step with their settings when
they start: created or updated when AGENTRUN_SESSION_RETENTION_DAYS is set or
AGENTRUN_WEBHOOK_DELIVERY_RETENTION_DAYS is not 0 (its default is 14), deleted when neither
asks for it (the settings of the workers that start last win; give every worker the same)."""

from __future__ import annotations

import logging
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from agentrun.contracts.retention import RetentionInput
from agentrun.protocol.names import RETENTION_WORKFLOW_NAME
from agentrun.settings import Settings

EVERY = timedelta(hours=1)
log = logging.getLogger("agentrun.retention")


def schedule_id(task_queue: str) -> str:
    return f"agentrun-session-retention-{task_queue}"


def retention_wanted(settings: Settings) -> bool:
    """Whether the settings ask for any retention (sessions, webhook deliveries)."""
    return settings.session_retention_days is not None or bool(
        settings.webhook_delivery_retention_days
    )


def retention_schedule(settings: Settings) -> Schedule:
    assert retention_wanted(settings)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            RETENTION_WORKFLOW_NAME,
            RetentionInput(
                idle_days=settings.session_retention_days,
                batch=settings.session_retention_batch,
                delivery_days=settings.webhook_delivery_retention_days or None,
            ),
            id=f"agentrun-retention-{settings.task_queue}",
            task_queue=settings.task_queue,
            execution_timeout=timedelta(hours=6),
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=EVERY)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def sync_retention_schedule(client: Client, settings: Settings) -> str | None:
    """Create or update the schedule from the settings (its id), or delete it when retention
    is off (None). Idempotent: every worker calls it when it starts."""
    sid = schedule_id(settings.task_queue)
    handle = client.get_schedule_handle(sid)
    if not retention_wanted(settings):
        try:
            await handle.delete()
        except RPCError as exc:
            # Retention is off: a server without schedules, or one that refuses, must not keep
            # the worker from starting.
            if exc.status != RPCStatusCode.NOT_FOUND:
                log.warning("could not remove the retention schedule %s: %s", sid, exc.message)
        return None
    schedule = retention_schedule(settings)
    try:
        await client.create_schedule(sid, schedule)
    except ScheduleAlreadyRunningError:

        def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await handle.update(update)
    return sid
