"""Delete a session (forgetting): the one operation behind `agentrun sessions delete`,
`DELETE /v1/sessions/{id}` and the retention schedule.

1. The session must be the tenant's (SessionNotFound otherwise, as for any other lookup).
2. A run of it that has not ended refuses the deletion (SessionActive) unless cancel_active:
   then each is cancelled (agentrun.client.cancel_run waits until it stopped) and its workflow
   is awaited, bounded by `wait_s`.
3. The store erases the session's text in one transaction and leaves the tombstone
   (agentrun.store.forget).
4. Temporal's histories of its runs (their inputs hold the prompt and config, their memo the
   result's preview) are deleted, every execution of each run's workflow id; a server that
   refuses (no permission, an older server) is reported in `history_errors`, not raised: the
   database, the record users read, is already erased.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from datetime import datetime

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from agentrun.client.calls import cancel_run
from agentrun.client.errors import AgentRunError, RunNotFound, SessionNotFound
from agentrun.contracts.run import ID_PATTERN
from agentrun.db.models import DEFAULT_TENANT, RunStatus, Session
from agentrun.run_liveness import closed_without_record, ended_unrecorded
from agentrun.store import NotFoundError, Repository, queue
from agentrun.store.forget import SessionActiveError, erase_session_tree, live_runs

__all__ = ["DeletedSession", "SessionActive", "delete_session"]

CANCEL_REASON = "the session is being deleted"
_ID = re.compile(ID_PATTERN)


class SessionActive(AgentRunError, SessionActiveError):
    """The session has a run that has not ended (`.run_ids`); nothing was deleted."""


@dataclass
class DeletedSession:
    session_id: str
    deleted_at: datetime
    run_ids: list[str]
    messages_erased: int
    cancelled: list[str] = field(default_factory=list)
    histories_deleted: int = 0
    history_errors: list[str] = field(default_factory=list)


async def delete_session(
    client: Client,
    repo: Repository,
    session_id: str,
    *,
    tenant: str = DEFAULT_TENANT,
    cancel_active: bool = False,
    by: str | None = None,
    wait_s: float = 60.0,
) -> DeletedSession:
    await _owned(repo, session_id, tenant)
    async with repo.session() as db:
        live = await live_runs(db, session_id)
    live = [r for r in live if await _still_going(client, repo, r)]
    if live and not cancel_active:
        raise SessionActive(session_id, live)
    if live:  # first, so that no queued message starts as its active run ends
        async with repo.transaction() as db:
            await queue.cancel_waiting(db, session_id, "the session is being deleted")
    try:
        cancelled = [r for r in live if await _cancel(client, r, by, wait_s)]
    except TimeoutError:
        raise SessionActive(session_id, live) from None
    try:
        async with repo.transaction() as db:
            erased = await erase_session_tree(db, session_id, tenant, by=by)
    except SessionActiveError as exc:  # a run was started meanwhile
        raise SessionActive(session_id, exc.run_ids) from None
    result = DeletedSession(
        session_id, erased.deleted_at, erased.run_ids, erased.messages, cancelled
    )
    for run_id in erased.run_ids:
        await _delete_histories(client, run_id, result)
    return result


async def _owned(repo: Repository, session_id: str, tenant: str) -> Session:
    try:
        return await repo.get_session(session_id, tenant)
    except NotFoundError:
        raise SessionNotFound(session_id) from None


async def _still_going(client: Client, repo: Repository, run_id: str) -> bool:
    """False for a run whose workflow ended without recording its end (terminated, timed out,
    gone): it is recorded FAILED first, as a new run on its session would record it."""
    how = await closed_without_record(client, run_id)
    if how is None:
        return True
    await repo.set_run_status(run_id, RunStatus.FAILED, error=ended_unrecorded(how))
    return False


async def _cancel(client: Client, run_id: str, by: str | None, wait_s: float) -> bool:
    """Cancel a run and wait (bounded) for its workflow to close; True if it was cancelled."""
    try:
        await asyncio.wait_for(
            cancel_run(client, run_id, reason=CANCEL_REASON, requested_by=by or "delete"),
            wait_s,
        )
    except RunNotFound:
        return False
    deadline = time.monotonic() + wait_s
    # Closed in visibility too: the server deletes a history only after its close is recorded
    # there, and retries a deletion that came first with a long backoff.
    query = f"WorkflowId = '{run_id}' AND ExecutionStatus = 'Running'"
    while time.monotonic() < deadline:
        if not [wf async for wf in client.list_workflows(query)]:
            return True
        await asyncio.sleep(0.2)
    raise TimeoutError(f"run {run_id!r} did not stop within {wait_s:g}s of its cancel")


async def _delete_histories(client: Client, run_id: str, result: DeletedSession) -> None:
    executions: list[str | None] = []
    try:
        # Ids of the id pattern need no quoting; any other is deleted by its exact id only.
        if _ID.match(run_id):
            async for wf in client.list_workflows(f"WorkflowId = '{run_id}'"):
                if wf.id == run_id:
                    executions.append(wf.run_id)
    except RPCError as exc:
        result.history_errors.append(f"{run_id}: listing its executions failed: {exc.message}")
    # The latest execution also by workflow id alone, in case visibility lags behind.
    for execution_run_id in [*executions, None]:
        request = DeleteWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=run_id, run_id=execution_run_id or ""),
        )
        try:
            await client.workflow_service.delete_workflow_execution(request)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                result.history_errors.append(f"{run_id}: {exc.message}")
            continue
        if execution_run_id is not None:
            result.histories_deleted += 1
