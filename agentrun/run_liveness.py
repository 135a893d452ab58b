"""Whether a run's workflow is still running, for records that say it is: a terminated or
timed-out workflow never recorded its end. Used by a new run's open (its session's holder) and
by deleting a session. Imports nothing of agentrun.client or workflows, so activities can use
it without an import cycle."""

from __future__ import annotations

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

__all__ = ["closed_without_record", "ended_unrecorded", "workflow_status"]


async def workflow_status(client: Client, run_id: str) -> WorkflowExecutionStatus | None:
    """The status of the run's (latest) workflow execution; None when there is none."""
    try:
        desc = await client.get_workflow_handle(run_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return desc.status or WorkflowExecutionStatus.RUNNING


async def closed_without_record(client: Client, run_id: str) -> str | None:
    """None while the run's workflow is running; else how it closed (its status name, or
    NOT_FOUND), for a record that still says the run is going: a terminated or timed-out
    workflow never recorded its end."""
    status = await workflow_status(client, run_id)
    if status is None:
        return "NOT_FOUND"
    return None if status == WorkflowExecutionStatus.RUNNING else status.name


def ended_unrecorded(how: str) -> str:
    """The error recorded for such a run (it is recorded FAILED, which frees its session)."""
    return f"the run's workflow ended without recording it ({how})"
