"""The operations on runs, each a function of a temporalio Client: start, decide (by update or
signal), submit a client-side result, cancel, status, result. Updates, signals and queries are
called through the workflow class's methods, never by name; failures become the typed errors of
agentrun.client.errors."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import CancelledError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from agentrun.client.errors import (
    AgentRunError,
    DecisionRefused,
    Refused,
    ResultRefused,
    RunEnded,
    RunNotFound,
    SessionBusy,
    SessionDeleted,
    SessionNotFound,
    error_from,
)
from agentrun.client.queue import first_waiting, send_message, session_policy
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
from agentrun.db.models import DEFAULT_TENANT
from agentrun.protocol.names import (
    MEMO_RESULT,
    SA_RUN_STATUS,
    SA_SESSION_ID,
    SA_TENANT,
    SA_WAITING_APPROVAL,
)
from agentrun.protocol.queue import IfBusy
from agentrun.protocol.statuses import Decision, RunStatus
from workflows.agent import AgentRunWorkflow

if TYPE_CHECKING:
    from agentrun.client.handle import RunHandle
    from agentrun.settings import Settings
    from agentrun.store import Repository


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def connect(settings: Settings) -> Client:
    """A Temporal client with agentrun's data converter (and payload codec)."""
    from agentrun.converter import data_converter
    from agentrun.telemetry.tracing import client_interceptors

    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        # OTEL_* set: the TracingInterceptor, so a run's trace starts at its start call.
        interceptors=client_interceptors(),
    )


async def start_run(
    client: Client,
    task_queue: str,
    prompt: str,
    *,
    session_id: str | None = None,
    run_id: str | None = None,
    config: AgentConfig | Mapping[str, Any] | None = None,
    repo: Repository | None = None,
    tenant: str | None = None,
    if_busy: IfBusy | str | None = None,
) -> RunHandle:
    """Start a run (the workflow id is the run id). Starting the same run id again while it
    runs returns the run already there; a run id whose run ended raises RunEnded (a closed run
    is never driven again). With a store, a busy session raises SessionBusy here, before
    anything starts; the workflow refuses both in any case. A config given as a mapping (parsed
    JSON, say) is validated strictly: an unknown field raises ValidationError and nothing is
    sent.

    The run and a new session are of `tenant` (None: the default tenant). With a store, a
    session of another tenant raises SessionNotFound and a run id of another tenant's run
    RunEnded, before anything starts; the run's open refuses such a session in any case.

    With a policy (`if_busy`, or the session's default) the message goes through the session's
    queue (agentrun.client.queue; the store is needed): `.accepted` of the handle says where."""
    if config is None:
        config = AgentConfig()
    elif not isinstance(config, AgentConfig):
        config = strict_validate(AgentConfig, dict(config))
    inp = StartRunInput(
        run_id=run_id or new_id("run"),
        session_id=session_id or new_id("session"),
        prompt=prompt,
        config=config,
        tenant=tenant,
    )
    tenant = inp.tenant or DEFAULT_TENANT
    if repo is not None:
        await _check_not_ended(repo, inp.run_id, tenant)
        if if_busy is not None or await session_policy(repo, inp.session_id) is not None:
            accepted = await send_message(client, task_queue, repo, inp, if_busy)
            from agentrun.client.handle import RunHandle

            return RunHandle(client, inp.run_id, store=repo, accepted=accepted)
        await _check_session(repo, inp.session_id, inp.run_id, tenant)
    elif if_busy is not None:
        raise AgentRunError("a message with a policy (if_busy) needs the store: give one")
    try:
        await client.start_workflow(
            AgentRunWorkflow.run,
            inp,
            id=inp.run_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(SA_SESSION_ID, inp.session_id),
                    SearchAttributePair(SA_RUN_STATUS, RunStatus.QUEUED.value),
                    SearchAttributePair(SA_WAITING_APPROVAL, False),
                    SearchAttributePair(SA_TENANT, tenant),
                ]
            ),
            static_summary=f"agent run: {inp.prompt[:120]}",
        )
    except WorkflowAlreadyStartedError:
        # Only a closed execution gets here: a running one is returned (USE_EXISTING).
        status = await _ended_status(client, repo, inp.run_id)
        raise RunEnded(inp.run_id, status, start=True) from None
    from agentrun.client.handle import RunHandle

    # Not the handle start_workflow returns, which is pinned to this first execution: a run
    # that continues-as-new (README Long runs) is reached by its workflow id alone.
    return RunHandle(client, inp.run_id, store=repo)


async def _check_not_ended(repo: Repository, run_id: str, tenant: str) -> None:
    # Also covers a run whose closed workflow Temporal no longer keeps (past retention).
    run = await repo.find_run(run_id)
    if run is not None and run.tenant != tenant:
        # Starting it would hand back another tenant's running run (USE_EXISTING): the id is
        # taken, and nothing more is said of that run.
        raise RunEnded(run_id, message=f"run id {run_id!r} is already used; start a new run id")
    if run is not None and RunStatus(run.status).terminal:
        raise RunEnded(run_id, run.status, start=True)


async def _check_session(repo: Repository, session_id: str, run_id: str, tenant: str) -> None:
    # Read-only early refusals by the store's rules (open_run applies them again): another
    # tenant's session first, so that its busy state is never told to this tenant.
    from agentrun.store import NotFoundError

    try:
        session = await repo.get_session(session_id)
    except NotFoundError:
        return
    if session.tenant != tenant:
        raise SessionNotFound(session_id)
    if session.deleted_at is not None:
        raise SessionDeleted(session_id)
    holder = await repo.session_holder(session_id) or await first_waiting(repo, session_id)
    if holder is not None and holder != run_id:
        raise SessionBusy(session_id, holder)


async def _ended_status(client: Client, repo: Repository | None, run_id: str) -> str:
    """The status a closed run ended with: the record's, else the one the workflow last
    published (see _closed_status)."""
    if repo is not None:
        run = await repo.find_run(run_id)
        if run is not None and RunStatus(run.status).terminal:
            return run.status
    return _closed_status(await client.get_workflow_handle(run_id).describe())


# -- talking to a run --------------------------------------------------------------------------


def _handle(client: Client, run_id: str) -> WorkflowHandle[AgentRunWorkflow, RunResult]:
    return client.get_workflow_handle_for(AgentRunWorkflow.run, run_id)


async def _typed(client: Client, run_id: str, exc: BaseException, default: type[Refused]) -> None:
    """Raise the typed error for `exc` (a call to the run failed); return when it has none."""
    if isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND:
        # Unknown id (RunNotFound), or a closed run: updates and signals reach running ones only.
        desc = await describe_run(client, run_id)
        raise RunEnded(run_id, _closed_status(desc)) from None
    typed = error_from(exc, run_id=run_id, default=default)
    if typed is not exc:
        raise typed


def _closed_status(desc: WorkflowExecutionDescription) -> str:
    """The run's own status as its workflow last published it (DONE, FAILED, CANCELED), else
    Temporal's execution status (TERMINATED, TIMED_OUT, ...). Runs from before the close
    status matched the run's closed COMPLETED when cancelled by update or signal."""
    published = desc.typed_search_attributes.get(SA_RUN_STATUS)
    if published in {s.value for s in RunStatus if s.terminal}:
        return str(published)
    return desc.status.name if desc.status else "UNKNOWN"


async def decide(
    client: Client,
    run_id: str,
    tool_call_id: str,
    decision: Decision | str,
    *,
    arguments: dict[str, Any] | None = None,
    arguments_sha256: str | None = None,
    decided_by: str | None = None,
    reason: str | None = None,
) -> RecordedDecision:
    """Approve, approve with edited arguments, or reject a call that waits (update
    decide_tool_call). A decision the run refuses raises a DecisionRefused (or UnknownToolCall,
    WrongWaitKind) whose type says why; an ended run RunEnded; an unknown one RunNotFound."""
    payload = ToolDecision(
        tool_call_id=tool_call_id,
        decision=Decision(decision),  # type: ignore[arg-type]
        arguments=arguments,
        arguments_sha256=arguments_sha256,
        decided_by=decided_by,
        reason=reason,
    )
    try:
        recorded = await _handle(client, run_id).execute_update(
            AgentRunWorkflow.decide_tool_call, payload
        )
        # The SDK types a named async update as returning its coroutine; it decodes the result.
        return cast(RecordedDecision, recorded)
    except (WorkflowUpdateFailedError, RPCError) as exc:
        await _typed(client, run_id, exc, DecisionRefused)
        raise


async def signal_decision(
    client: Client,
    run_id: str,
    tool_call_id: str,
    decision: Decision | str,
    *,
    arguments: dict[str, Any] | None = None,
    arguments_sha256: str | None = None,
    decided_by: str | None = None,
    reason: str | None = None,
) -> None:
    """The same decision as a signal (fire and forget): the run applies it when it can, and
    records a tool.decision_invalid event when it cannot. An unknown run raises RunNotFound."""
    payload = strict_validate(
        ToolDecision,
        {
            "tool_call_id": tool_call_id,
            "decision": decision,
            "arguments": arguments,
            "arguments_sha256": arguments_sha256,
            "decided_by": decided_by,
            "reason": reason,
        },
    )
    try:
        await _handle(client, run_id).signal(AgentRunWorkflow.tool_decision, payload)
    except RPCError as exc:
        await _typed(client, run_id, exc, DecisionRefused)
        raise


async def submit_tool_result(
    client: Client, run_id: str, tool_call_id: str, result: Any, *, is_error: bool = False
) -> str:
    """Hand a client-side tool's result to the run (update submit_tool_result). A result the
    run refuses raises a ResultRefused (or UnknownToolCall, WrongWaitKind)."""
    payload = ToolResultSubmission(tool_call_id=tool_call_id, result=result, is_error=is_error)
    try:
        accepted = await _handle(client, run_id).execute_update(
            AgentRunWorkflow.submit_tool_result, payload
        )
        return cast(str, accepted)
    except (WorkflowUpdateFailedError, RPCError) as exc:
        await _typed(client, run_id, exc, ResultRefused)
        raise


async def cancel_run(
    client: Client, run_id: str, reason: str | None = None, requested_by: str | None = None
) -> CancelAnswer:
    """Cancel a run and wait until it has stopped. A run that already ended is left as it is
    and the answer says so; an unknown run raises RunNotFound."""
    handle = _handle(client, run_id)
    try:
        answer = await handle.execute_update(
            AgentRunWorkflow.cancel, CancelRequest(reason=reason, requested_by=requested_by)
        )
        return cast(CancelAnswer, answer)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
    try:
        # The run's own status (CANCELED, say), not Temporal's close status for it.
        status = await _ended_status(client, None, run_id)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise RunNotFound(run_id) from None
        raise
    return CancelAnswer(
        status=status, message=f"the run already ended ({status}); nothing to cancel"
    )


async def run_status(client: Client, run_id: str) -> RunStatusView:
    """The query status: phase, turn, pending approvals with their arguments, usage so far."""
    try:
        return await _handle(client, run_id).query(AgentRunWorkflow.status)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise RunNotFound(run_id) from None
        raise


async def describe_run(client: Client, run_id: str) -> WorkflowExecutionDescription:
    """Temporal's description of the run's workflow (status, times, search attributes); an
    unknown run raises RunNotFound."""
    try:
        return await _handle(client, run_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise RunNotFound(run_id) from None
        raise


async def run_result(client: Client, run_id: str) -> RunResult:
    """Wait for the run's result. A cancelled run (its workflow closes as Canceled) returns its
    result with status CANCELED; a run refused at open raises RunRefused, one that failed
    RunFailed."""
    try:
        return await _handle(client, run_id).result()
    except WorkflowFailureError as exc:
        if isinstance(exc.cause, CancelledError):
            return await _cancelled_result(client, run_id)
        raise error_from(exc, run_id=run_id) from exc.cause
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise RunNotFound(run_id) from None
        raise


async def _cancelled_result(client: Client, run_id: str) -> RunResult:
    """A workflow closed as Canceled has no result: the run keeps it in the memo. Runs from
    before that (only Temporal's own cancel closed them Canceled) get one from the search
    attributes."""
    desc = await _handle(client, run_id).describe()
    kept = await desc.memo_value(MEMO_RESULT, None, type_hint=RunResult)
    if kept is not None:
        return cast(RunResult, kept)
    return RunResult(
        run_id=run_id,
        session_id=desc.typed_search_attributes.get(SA_SESSION_ID) or "",
        status=RunStatus.CANCELED,
        error="cancelled through Temporal",
    )
