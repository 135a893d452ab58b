"""A run's Temporal executions: a run that continued-as-new (README Long runs) is one workflow id
with a chain of executions, each with its own Temporal run id and history. Clients never need
them to talk to a run (its workflow id reaches the current one); operators and tests read them
to replay a run or to see how large each history grew."""

from __future__ import annotations

from temporalio.client import Client, WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode

from agentrun.client.errors import RunNotFound

# A chain longer than this is not a run of this project (max_turns is at most 1,000).
MAX_EXECUTIONS = 10_000


async def run_histories(client: Client, run_id: str) -> list[WorkflowHistory]:
    """The histories of the run's executions, the first one first (one for a run that never
    continued-as-new). An unknown run raises RunNotFound."""
    histories: list[WorkflowHistory] = []
    temporal_run_id: str | None = None
    while len(histories) < MAX_EXECUTIONS:
        try:
            history = await client.get_workflow_handle(
                run_id, run_id=temporal_run_id
            ).fetch_history()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND and not histories:
                raise RunNotFound(run_id) from None
            raise
        histories.append(history)
        started = history.events[0].workflow_execution_started_event_attributes
        temporal_run_id = started.continued_execution_run_id
        if not temporal_run_id:
            break
    histories.reverse()
    return histories
