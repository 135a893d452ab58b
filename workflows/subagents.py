"""Sub-agents as child runs (README Sub-agents). A `delegate_to_<name>` call starts a child
agentrun.AgentRun whose id (also its session's) is derived from this run, the sub-agent and the
tool call, in the same tenant and workspace; its final text becomes the call's result, a failed
or cancelled child an error result. Cancelling this run cancels the child (the abandoned batch
cancels the call's task; the child is asked to cancel and awaited until it has). A child's
usage is added to this run's. A child whose calls wait for approval tells this run (signal
subrun_waits), which shows them in its status (`waiting_on`), its details and its event log;
the decisions are made on the child."""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import (
    ChildWorkflowError,
    FailureError,
    WorkflowAlreadyStartedError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from agentrun.contracts import (
        AppendEventInput,
        OutcomeKind,
        RunResult,
        RunStatus,
        SetStatusInput,
        StartRunInput,
        ToolCallRequest,
        ToolOutcomeInput,
        ToolResult,
        Usage,
        WaitKind,
    )
    from agentrun.contracts.people import PendingCall, WaitingOn
    from agentrun.contracts.run import SubRunParent
    from agentrun.contracts.subagents import (
        SubRunWaits,
        agent_of,
        child_config,
        child_run_id,
        child_within_budget,
        descends_from,
        parse_task,
    )
    from agentrun.db.models import DEFAULT_TENANT
    from agentrun.protocol.events import (
        EventData,
        SubRunFinishedData,
        SubRunStartedData,
        SubRunWaitingData,
    )
    from agentrun.protocol.names import (
        SA_RUN_STATUS,
        SA_SESSION_ID,
        SA_TENANT,
        SA_WAITING_APPROVAL,
        WORKFLOW_NAME,
        Signal,
    )
    from workflows import rules, steps
    from workflows.state import RunState

__all__ = ["SubAgentSteps"]


class SubAgentSteps(RunState):
    def __init__(self) -> None:
        super().__init__()
        # The children running now (run id -> sub-agent), and the calls of sub-runs (children
        # or deeper) that wait for approval, by the run that waits.
        self._children: dict[str, str] = {}
        self._waiting_on: dict[str, SubRunWaits] = {}
        self._parent: SubRunParent | None = None
        self._told_parent: list[PendingCall] = []

    # -- a delegate call ---------------------------------------------------------------------

    async def _run_subagent(self, inp: StartRunInput, call: ToolCallRequest) -> ToolResult:
        self._parent = inp.parent
        child, refusal = self._child_input(inp, call)
        if child is None:
            return await self._subrun_error(inp, call, refusal)
        self._children[child.run_id] = agent_of(call.name)
        try:
            result = await self._await_child(inp, call, child)
        except GeneratorExit:  # evicted from the worker's cache: no workflow calls any more
            raise
        except BaseException:
            await self._forget_child(child.run_id)
            raise
        await self._forget_child(child.run_id)
        return result

    def _child_input(
        self, inp: StartRunInput, call: ToolCallRequest
    ) -> tuple[StartRunInput | None, str]:
        """The child run's input, or why the call starts none (the model's error result)."""
        config, agent = inp.config, agent_of(call.name)
        depth = (inp.parent.depth if inp.parent else 0) + 1
        if agent not in (config.subagents or {}):
            return None, f"{call.name}: this run has no sub-agent {agent!r}"
        if depth > config.max_depth:
            return None, (
                f"{call.name}: not run: sub-runs nest at most {config.max_depth} level(s) deep "
                "(max_depth) and this run is at that depth"
            )
        if len(self._children) >= config.max_fanout:
            return None, (
                f"{call.name}: not run: a run has at most {config.max_fanout} sub-runs at once "
                "(max_fanout); delegate this again once the others have answered"
            )
        task, problem = parse_task(call.arguments)
        if task is None:
            return None, f"{call.name}: {problem}"
        run_id = child_run_id(inp.run_id, agent, call.id)
        workspace = self._opened.workspace if self._opened else None
        child_cfg, spent = child_within_budget(
            child_config(config, agent, workspace, depth), config, self._usage
        )
        if child_cfg is None:
            return None, f"{call.name}: not run: {spent}"
        try:
            child = StartRunInput(
                run_id=run_id,
                session_id=run_id,
                prompt=task,
                config=child_cfg,
                tenant=inp.tenant,
                parent=SubRunParent(
                    run_id=inp.run_id, tool_call_id=call.id, agent=agent, depth=depth
                ),
            )
        except ValidationError as exc:
            return None, f"{call.name}: the task cannot be run: {exc.errors()[0]['msg']}"
        return child, ""

    async def _await_child(
        self, inp: StartRunInput, call: ToolCallRequest, child: StartRunInput
    ) -> ToolResult:
        agent = agent_of(call.name)
        try:
            handle = await workflow.start_child_workflow(
                WORKFLOW_NAME,
                child,
                id=child.run_id,
                task_queue=workflow.info().task_queue,
                result_type=RunResult,
                # Cancelling the call's task asks the child to cancel and waits until it has
                # (CANCELED recorded); a parent that closes anyhow else cancels it too.
                cancellation_type=workflow.ChildWorkflowCancellationType.WAIT_CANCELLATION_COMPLETED,
                parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=_child_attributes(child),
                static_summary=f"sub-agent {agent}: {child.prompt[:120]}",
            )
        except WorkflowAlreadyStartedError:
            why = f"a run with the id {child.run_id!r} exists already; not started again"
            return await self._subrun_error(inp, call, f"{call.name}: {why}")
        depth = child.parent.depth if child.parent else 1
        await self._subrun_event(
            inp.run_id,
            SubRunStartedData(
                tool_call_id=call.id, agent=agent, subrun_id=child.run_id, depth=depth
            ),
            f"subrun.started:{child.run_id}",
        )
        try:
            result = await handle
        except ChildWorkflowError as err:
            task = asyncio.current_task()
            ours = self._cancel is not None or workflow.cancellation_reason() is not None
            if ours or (task is not None and task.cancelling()):
                # This run cancelled it (its batch was abandoned): the abandon records the
                # call's result; the child's end and usage are recorded first, whatever comes.
                await self._uninterrupted(
                    asyncio.ensure_future(self._child_ended(inp, call, child.run_id, err))
                )
                # As a cancelled step ends: the run's cancel path, not a failure of the run.
                raise asyncio.CancelledError(rules.error_message(err)) from err
            why = await self._child_ended(inp, call, child.run_id, err)
            return await self._subrun_error(inp, call, why)
        self._add_child_usage(result.usage)
        await self._finished_event(inp, call, child.run_id, result.status, result.error)
        return await steps.record_outcome_input(
            ToolOutcomeInput(
                run_id=inp.run_id,
                session_id=inp.session_id,
                turn=self._turn,
                call=call,
                kind=OutcomeKind.SUBRUN,
                text=result.final_text,
                is_error=False,
                # The workflow carries the answer's first characters; the record takes it whole.
                text_of_run=child.run_id if result.final_text_truncated else None,
            ),
            f"record the answer of sub-agent {agent}",
        )

    async def _child_ended(
        self, inp: StartRunInput, call: ToolCallRequest, child_id: str, err: ChildWorkflowError
    ) -> str:
        """A child that did not answer: its record made terminal (a child whose workflow was
        terminated never recorded its end), its usage added, subrun.finished written; returns
        the model's error text."""
        message = rules.error_message(err.cause) if err.cause else str(err)
        status = RunStatus.CANCELED if is_cancelled_exception(err) else RunStatus.FAILED
        error: str | None = message
        try:
            recorded = await steps.end_subrun(
                SetStatusInput(
                    run_id=child_id, status=status, error=f"its workflow ended: {message}"
                ),
                f"end of sub-run {agent_of(call.name)}",
            )
        except FailureError:  # no record: refused at open, nothing used
            pass
        else:
            self._add_child_usage(recorded.usage)
            status, error = recorded.status, recorded.error or message
        await self._finished_event(inp, call, child_id, status, error)
        what = "was cancelled" if status == RunStatus.CANCELED else "failed"
        return f"{call.name}: the sub-agent's run {child_id} {what}: {error}"

    def _add_child_usage(self, usage: Usage) -> None:
        self._usage = self._usage.add(usage)
        self._subrun_usage = self._subrun_usage.add(usage)

    async def _subrun_error(
        self, inp: StartRunInput, call: ToolCallRequest, why: str
    ) -> ToolResult:
        return await self._record_outcome(
            inp, call, rules.Outcome(OutcomeKind.SUBRUN, f"error: {why}")
        )

    async def _finished_event(
        self,
        inp: StartRunInput,
        call: ToolCallRequest,
        child_id: str,
        status: str,
        error: str | None,
    ) -> None:
        data = SubRunFinishedData(
            tool_call_id=call.id, agent=agent_of(call.name), subrun_id=child_id, status=status
        )
        if error is not None:
            data.error = error
        await self._subrun_event(inp.run_id, data, f"subrun.finished:{child_id}")

    async def _subrun_event(self, run_id: str, data: EventData, key: str) -> None:
        await steps.append_event(
            AppendEventInput(
                run_id=run_id,
                type=data.TYPE,
                data=data.model_dump(mode="json", exclude_unset=True),
                key=key,
            )
        )

    # -- waits of sub-runs --------------------------------------------------------------------

    @workflow.signal(name=Signal.SUBRUN_WAITS)
    async def subrun_waits(self, notice: SubRunWaits) -> None:
        if self._finished:
            return
        if notice.via not in self._children or not descends_from(notice.run_id, notice.via):
            # Not from a child this run started (or one that has ended), or about a run that is
            # not under it: a forged or stale notice changes nothing (and adds no command).
            workflow.logger.warning(
                "subrun_waits ignored: %r (via %r) is not a sub-run this run waits on",
                notice.run_id[:200],
                notice.via[:200],
            )
            return
        before = self._waiting_on.get(notice.run_id)
        seen = {c.tool_call_id for c in before.calls} if before else set()
        if notice.calls:
            self._waiting_on[notice.run_id] = notice
        else:
            self._waiting_on.pop(notice.run_id, None)
        self._show_subrun_waits()
        for c in notice.calls:
            if c.tool_call_id not in seen:
                data = SubRunWaitingData(**c.model_dump(exclude={"kind"}), subrun_id=notice.run_id)
                key = f"subrun.waiting:{notice.run_id}:{c.tool_call_id}"
                await self._subrun_event(self._run_id, data, key)
        await self._signal_parent(notice.model_copy(update={"via": self._run_id}))

    async def _tell_parent_waits(self, inp: StartRunInput) -> None:
        """A sub-agent's run: tell the parent which of its calls wait for approval now."""
        if inp.parent is None:
            return
        self._parent = inp.parent
        calls = [w.pending for w in self._book.of_kind(WaitKind.APPROVAL)]
        if calls == self._told_parent:
            return
        self._told_parent = calls
        await self._signal_parent(
            SubRunWaits(run_id=inp.run_id, via=inp.run_id, agent=inp.parent.agent, calls=calls)
        )

    async def _signal_parent(self, notice: SubRunWaits) -> None:
        if self._parent is None:
            return
        parent = workflow.get_external_workflow_handle(self._parent.run_id)
        try:
            await parent.signal(Signal.SUBRUN_WAITS, notice)
        except Exception as exc:  # the parent has closed: nobody to tell
            workflow.logger.info("could not tell the parent run about waits: %s", exc)

    async def _forget_child(self, child_id: str) -> None:
        """The child has ended: it and the waits it told of are gone (and the parent told)."""
        self._children.pop(child_id, None)
        gone = [rid for rid, n in self._waiting_on.items() if n.via == child_id]
        for rid in gone:
            notice = self._waiting_on.pop(rid)
            if self._cancel is None and workflow.cancellation_reason() is None:
                await self._signal_parent(
                    notice.model_copy(update={"via": self._run_id, "calls": []})
                )
        if gone:
            self._show_subrun_waits()

    def _show_subrun_waits(self) -> None:
        lines = [
            f"waiting on sub-run {n.run_id} for approval of {rules.describe(c)}"
            for n in self._waiting_on.values()
            for c in n.calls
        ]
        workflow.set_current_details("\n".join(lines) or f"turn {self._turn}: waiting on sub-runs")

    def _waiting_on_view(self) -> list[WaitingOn]:
        return [
            WaitingOn(run_id=n.run_id, agent=n.agent, calls=n.calls)
            for n in self._waiting_on.values()
        ]


def _child_attributes(child: StartRunInput) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(SA_SESSION_ID, child.session_id),
            SearchAttributePair(SA_RUN_STATUS, RunStatus.QUEUED.value),
            SearchAttributePair(SA_WAITING_APPROVAL, False),
            SearchAttributePair(SA_TENANT, child.tenant or DEFAULT_TENANT),
        ]
    )
