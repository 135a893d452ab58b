"""Run bookkeeping activities: open a run, move its status forward, request and record what
people decide, append an event. Each is registered under its agentrun.protocol.names.Activity
name, which never changes (the method names may)."""

from __future__ import annotations

from datetime import UTC, datetime

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.policy import check_workspace
from activities.sessions import open_refused, wake_if_waiting
from activities.subagent_tools import run_tools, subruns_workspace
from activities.tools import ToolRegistry
from agentrun.contracts import (
    AgentConfig,
    AppendEventInput,
    OpenedRun,
    OpenRunInput,
    RecordDecisionInput,
    RecordedDecision,
    RequestCancelInput,
    RequestWaitInput,
    ResumeRunInput,
    RunResult,
    SessionBudget,
    SetStatusInput,
    ToolInfo,
    preview,
    storage_problems,
)
from agentrun.db.models import DEFAULT_TENANT, Run, RunStatus
from agentrun.pricing import Pricing
from agentrun.protocol import statuses
from agentrun.protocol.events import payload as event_payload
from agentrun.protocol.names import Activity, ErrorType
from agentrun.run_liveness import closed_without_record, ended_unrecorded
from agentrun.settings import Settings
from agentrun.store import (
    NotFoundError,
    Repository,
    RunEndedError,
    RunOwnedError,
    SessionBusyError,
    SessionNotFoundError,
)
from agentrun.store.usage import run_usage
from agentrun.telemetry import metrics


class RunActivities:
    def __init__(self, repo: Repository, settings: Settings, registry: ToolRegistry) -> None:
        self.repo = repo
        self.settings = settings
        self.registry = registry

    def resolve_tools(self, config: AgentConfig) -> list[ToolInfo]:
        """The run's tools with their approval resolved (activities.policy); a config that
        would loosen the worker's policy or work outside its workspace root raises
        InvalidConfig, a ValueError."""
        check_workspace(config.workspace, self.settings.tool_workspace_root)
        return run_tools(self.registry, config, self.settings.approval_floor)

    # "open run": registered under its first name, which runs in flight and histories use.
    @activity.defn(name=Activity.PREPARE_RUN)
    async def open_run(self, inp: OpenRunInput) -> OpenedRun:
        try:
            return await self._open_run(inp)
        except ApplicationError as exc:
            if exc.non_retryable:
                await open_refused(self.repo, inp.run_id, inp.session_id, exc.message)
            raise

    async def _open_run(self, inp: OpenRunInput) -> OpenedRun:
        problems = storage_problems(inp)
        if problems:
            # The database would refuse these for ever; refuse the run instead, writing nothing.
            raise ApplicationError(
                "the run's input cannot be stored: " + "; ".join(problems),
                type=ErrorType.INVALID_INPUT,
                non_retryable=True,
            )
        try:
            tools = self.resolve_tools(inp.config)
        except ValueError as exc:
            raise ApplicationError(
                str(exc), type=ErrorType.INVALID_CONFIG, non_retryable=True
            ) from exc
        model = inp.config.model or self.settings.model
        budget = await self.repo.session_budget(
            inp.session_id, inp.run_id, inp.tenant or DEFAULT_TENANT
        )
        _refuse_unpriced_cost_budget(inp, budget, model, Pricing(self.settings.prices))
        try:
            try:
                run = await self._open(inp, model)
            except SessionBusyError as exc:
                if not await self._release_if_gone(exc.active_run_id):
                    raise
                run = await self._open(inp, model)
        except SessionBusyError as exc:
            raise ApplicationError(
                str(exc), type=ErrorType.SESSION_BUSY, non_retryable=True
            ) from exc
        except SessionNotFoundError as exc:
            raise _refused(exc, ErrorType.SESSION_NOT_FOUND) from exc
        except RunEndedError as exc:
            raise _refused(exc, ErrorType.RUN_ENDED) from exc
        except RunOwnedError as exc:
            raise _refused(exc, ErrorType.RUN_OWNED) from exc
        except ValueError as exc:
            raise ApplicationError(
                str(exc), type=ErrorType.INVALID_INPUT, non_retryable=True
            ) from exc
        workspace = subruns_workspace(inp.config, self.settings.tool_workspace_root, inp.session_id)
        return OpenedRun(
            run_id=run.id, model=run.model, tools=tools, session_budget=budget, workspace=workspace
        )

    async def _open(self, inp: OpenRunInput, model: str) -> Run:
        return await self.repo.open_run(
            run_id=inp.run_id,
            session_id=inp.session_id,
            model=model,
            config=inp.config,
            prompt=inp.prompt,
            # The execution that opens the run is the only one that may drive it: a closed run
            # id started again gets a new execution, which is refused.
            workflow_run_id=activity.info().workflow_run_id,
            # Where this worker sends the run's model calls (no key): a client whose own
            # OPENAI_BASE_URL differs can say so (model settings take effect in the worker).
            model_endpoint=self.settings.model_endpoint,
            tenant=inp.tenant or DEFAULT_TENANT,
            parent_run_id=inp.parent_run_id,
        )

    async def _release_if_gone(self, holder: str) -> bool:
        """A run whose workflow was terminated (or timed out) never recorded its end and would
        hold its session forever: record it as FAILED, which frees the session."""
        if await self.repo.find_run(holder) is None:
            return False  # a queued message's run that has not opened (store/queue.py)
        how = await closed_without_record(activity.client(), holder)
        if how is None:
            return False
        run, changed = await self.repo.set_run_status(
            holder, RunStatus.FAILED, error=ended_unrecorded(how)
        )
        if changed:
            metrics.run_status_changed(metrics.meter(), run.status)
        return changed

    @activity.defn(name=Activity.RESUME_RUN)
    async def resume_run(self, inp: ResumeRunInput) -> None:
        """The next execution of a run that continued-as-new takes the run over: refused, as
        open_run refuses, when the run ended or another workflow chain of its id opened it."""
        try:
            await self.repo.resume_run(inp.run_id, inp.first_execution_run_id)
        except RunEndedError as exc:
            raise _refused(exc, ErrorType.RUN_ENDED) from exc
        except RunOwnedError as exc:
            raise _refused(exc, ErrorType.RUN_OWNED) from exc
        except NotFoundError as exc:
            raise _refused(exc, ErrorType.RUN_ENDED) from exc

    @activity.defn(name=Activity.REQUEST_WAITS)
    async def request_waits(self, inp: RequestWaitInput) -> bool:
        _, changed = await self.repo.request_waits(inp.run_id, inp.calls)
        return changed

    @activity.defn(name=Activity.RECORD_DECISION)
    async def record_decision(self, inp: RecordDecisionInput) -> RecordedDecision:
        asked = datetime.now(UTC)
        row = await self.repo.record_decision(inp.run_id, inp.decision)
        metrics.decision_recorded(metrics.meter(), row, asked)
        assert row.decision is not None, "a recorded decision has its decision"
        return RecordedDecision(
            tool_call_id=row.tool_call_id,
            name=row.name,
            decision=statuses.Decision(row.decision),
            arguments=row.decided_arguments or row.arguments,
            decided_by=row.decided_by or "",
            reason=row.decision_reason,
        )

    @activity.defn(name=Activity.APPEND_EVENT)
    async def append_event(self, inp: AppendEventInput) -> int:
        event = await self.repo.append_event(
            inp.run_id, event_payload(inp.type, inp.data), key=inp.key
        )
        return event.seq

    @activity.defn(name=Activity.REQUEST_CANCEL)
    async def request_cancel(self, inp: RequestCancelInput) -> None:
        """Ask Temporal to cancel the calling workflow, so that a run cancelled by the cancel
        update or signal closes as Canceled: the SDK closes a workflow as Canceled only after
        the server asked it to cancel, and the server refuses a workflow's request to cancel
        itself (RequestCancelExternalWorkflowExecution on its own id fails as not found)."""
        # The workflow id is the run id; the run id pins this execution.
        handle = activity.client().get_workflow_handle(
            inp.run_id, run_id=activity.info().workflow_run_id
        )
        try:
            await handle.cancel(reason=inp.reason)
        except RPCError as exc:
            if exc.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.INVALID_ARGUMENT):
                # No retry changes this; the workflow then completes instead.
                raise ApplicationError(str(exc), non_retryable=True) from exc
            raise

    @activity.defn(name=Activity.SET_STATUS)
    async def set_status(self, inp: SetStatusInput) -> RunResult:
        status = RunStatus(inp.status)
        final_text = None
        if status == RunStatus.DONE:
            final_text = await self.repo.final_assistant_text(inp.run_id)
        run, changed = await self.repo.set_run_status(
            inp.run_id, status, error=inp.error, final_text=final_text
        )
        if changed:
            metrics.run_status_changed(metrics.meter(), run.status)
        if status.terminal:  # the session is free: messages queued for it can go
            await wake_if_waiting(self.repo, run.session_id)
        text, cut = preview(run.final_text or "")
        return RunResult(
            run_id=run.id,
            session_id=run.session_id,
            status=statuses.RunStatus(run.status),
            final_text=text,
            final_text_truncated=cut,
            error=run.error,
            usage=run_usage(run),
        )


def _refuse_unpriced_cost_budget(
    inp: OpenRunInput, session: SessionBudget | None, model: str, pricing: Pricing
) -> None:
    """A cost budget cannot be kept for a model without a price: refuse the run before it
    spends anything (workflows/budgets.py would stop it after its first call)."""
    which = "max_cost_usd" if inp.config.max_cost_usd is not None else None
    if which is None and session is not None and session.max_cost_usd is not None:
        which = "the session's max_cost_usd"
    if which is not None and not pricing.knows(model):
        raise ApplicationError(
            f"{which} is set but no price is known for model {model!r}, so the budget could "
            "not be kept: set its price in AGENTRUN_PRICES (README Cost and budgets)",
            type=ErrorType.INVALID_CONFIG,
            non_retryable=True,
        )


def _refused(exc: Exception, why: ErrorType) -> ApplicationError:
    """The run cannot be opened: a typed failure no retry changes."""
    return ApplicationError(str(exc), type=why, non_retryable=True)
