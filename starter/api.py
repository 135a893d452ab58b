"""The Python API that scripts and backends use: start a run, follow its events, get its result."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from agentrun.contracts import (
    AgentConfig,
    CancelAnswer,
    CancelRequest,
    RecordedDecision,
    RunResult,
    RunStatusView,
    StartRunInput,
    ToolDecision,
    ToolResultSubmission,
    strict_validate,
)
from agentrun.db.models import RunEvent
from agentrun.db.repository import Repository, SessionBusyError
from workflows.agent import SA_RUN_STATUS, SA_SESSION_ID, SA_WAITING_APPROVAL, AgentRunWorkflow


class RunAlreadyEndedError(ValueError):
    """The run id names a run that already ended. A run id is used once: start a new one."""

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"run {run_id!r} already ended ({status}); start a new run id")
        self.run_id = run_id
        self.status = status


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def start_run(
    client: Client,
    task_queue: str,
    prompt: str,
    *,
    session_id: str | None = None,
    run_id: str | None = None,
    config: AgentConfig | Mapping[str, Any] | None = None,
    repo: Repository | None = None,
) -> WorkflowHandle[AgentRunWorkflow, RunResult]:
    """Start a run (the workflow id is the run id). Starting the same run id again while it
    runs returns the run already there; a run id whose run ended raises RunAlreadyEndedError
    (a closed run is never driven again). With a repository, a busy session is refused here,
    before anything starts; the workflow refuses both in any case. A config given as a mapping
    (parsed JSON, say) is validated strictly: an unknown field raises ValidationError and
    nothing is sent."""
    if config is None:
        config = AgentConfig()
    elif not isinstance(config, AgentConfig):
        config = strict_validate(AgentConfig, dict(config))
    inp = StartRunInput(
        run_id=run_id or new_id("run"),
        session_id=session_id or new_id("session"),
        prompt=prompt,
        config=config,
    )
    if repo is not None:
        await _check_not_ended(repo, inp.run_id)
        await _check_session(repo, inp.session_id, inp.run_id)
    try:
        return await client.start_workflow(
            AgentRunWorkflow.run,
            inp,
            id=inp.run_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(SA_SESSION_ID, inp.session_id),
                    SearchAttributePair(SA_RUN_STATUS, "QUEUED"),
                    SearchAttributePair(SA_WAITING_APPROVAL, False),
                ]
            ),
            static_summary=f"agent run: {inp.prompt[:120]}",
        )
    except WorkflowAlreadyStartedError:
        # Only a closed execution gets here: a running one is returned (USE_EXISTING).
        status = await _ended_status(client, repo, inp.run_id)
        raise RunAlreadyEndedError(inp.run_id, status) from None


async def _check_not_ended(repo: Repository, run_id: str) -> None:
    # Also covers a run whose closed workflow Temporal no longer keeps (past retention).
    from agentrun.db.models import RunStatus

    run = await repo.find_run(run_id)
    if run is not None and RunStatus(run.status).terminal:
        raise RunAlreadyEndedError(run_id, run.status)


async def _ended_status(client: Client, repo: Repository | None, run_id: str) -> str:
    """The status a closed run ended with: the record's, else the one the workflow last
    published (a run cancelled by update closes COMPLETED in Temporal but ended CANCELED)."""
    from agentrun.db.models import RunStatus

    if repo is not None:
        run = await repo.find_run(run_id)
        if run is not None and RunStatus(run.status).terminal:
            return run.status
    desc = await client.get_workflow_handle(run_id).describe()
    published = desc.typed_search_attributes.get(SA_RUN_STATUS)
    if published in ("DONE", "FAILED", "CANCELED"):
        return published
    return desc.status.name if desc.status else "CLOSED"


async def _check_session(repo: Repository, session_id: str, run_id: str) -> None:
    from agentrun.db.models import RunStatus, Session

    async with repo.session() as db:
        session = await db.get(Session, session_id)
    if session is None or not session.active_run_id or session.active_run_id == run_id:
        return
    holder = await repo.find_run(session.active_run_id)
    if holder is not None and not RunStatus(holder.status).terminal:
        raise SessionBusyError(session_id, holder.id)


async def follow(repo: Repository, run_id: str, after_seq: int = 0) -> AsyncIterator[RunEvent]:
    """Every event of the run after `after_seq`, live, until the run ends."""
    async for event in repo.follow_events(run_id, after_seq):
        yield event


async def decide(
    client: Client,
    run_id: str,
    tool_call_id: str,
    decision: str,
    *,
    arguments: dict[str, Any] | None = None,
    arguments_sha256: str | None = None,
    decided_by: str | None = None,
    reason: str | None = None,
) -> RecordedDecision:
    """Approve, approve with edited arguments, or reject a call that waits (update
    decide_tool_call). A bad decision raises WorkflowUpdateFailedError with the reason."""
    payload = ToolDecision(
        tool_call_id=tool_call_id,
        decision=decision,  # type: ignore[arg-type]
        arguments=arguments,
        arguments_sha256=arguments_sha256,
        decided_by=decided_by,
        reason=reason,
    )
    handle = client.get_workflow_handle_for(AgentRunWorkflow.run, run_id)
    return await handle.execute_update("decide_tool_call", payload, result_type=RecordedDecision)


async def submit_tool_result(
    client: Client, run_id: str, tool_call_id: str, result: Any, *, is_error: bool = False
) -> str:
    """Hand a client-side tool's result to the run (update submit_tool_result)."""
    handle = client.get_workflow_handle_for(AgentRunWorkflow.run, run_id)
    return await handle.execute_update(
        "submit_tool_result",
        ToolResultSubmission(tool_call_id=tool_call_id, result=result, is_error=is_error),
        result_type=str,
    )


async def cancel_run(
    client: Client, run_id: str, reason: str | None = None, requested_by: str | None = None
) -> CancelAnswer:
    """Cancel a run and wait until it has stopped. A run that already ended is left as it is
    and the answer says so."""
    handle = client.get_workflow_handle_for(AgentRunWorkflow.run, run_id)
    try:
        return await handle.execute_update(
            "cancel",
            CancelRequest(reason=reason, requested_by=requested_by),
            result_type=CancelAnswer,
        )
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        desc = await handle.describe()  # raises RPCError NOT_FOUND for an unknown run
        status = desc.status.name if desc.status else "UNKNOWN"
        return CancelAnswer(
            status=status, message=f"the run already ended ({status}); nothing to cancel"
        )


async def run_status(client: Client, run_id: str) -> RunStatusView:
    """The query status: phase, turn, pending approvals with their arguments, usage so far."""
    handle = client.get_workflow_handle_for(AgentRunWorkflow.run, run_id)
    return await handle.query(AgentRunWorkflow.status)
