"""Waiting for people and apps: approvals and client-side results, their durable timeouts, and
decisions that come by signal (early ones kept until the call exists)."""

from __future__ import annotations

from collections.abc import Callable

from temporalio import workflow
from temporalio.exceptions import (
    ApplicationError,
)

with workflow.unsafe.imports_passed_through():
    from agentrun.contracts import (
        RecordedDecision,
        RunStatus,
        StartRunInput,
        ToolCallRequest,
        ToolDecision,
        WaitKind,
    )
    from agentrun.protocol.names import (
        SA_RUN_STATUS,
        SA_WAITING_APPROVAL,
        ErrorType,
    )
    from workflows import rules, steps
    from workflows.rules import Refusal, Wait
    from workflows.state import RunState


class WaitSteps(RunState):
    async def _request_waits(self, inp: StartRunInput, calls: list[ToolCallRequest]) -> None:
        pending = []
        for call in calls:
            kind = rules.wait_kind(self._tools.get(call.name))
            if kind is None:
                continue
            p = rules.pending_call(call, kind, self._turn)
            # Known before the request is written, so a decision sent the moment an app sees
            # tool.approval_requested always validates.
            self._book.add(Wait(p, self._tools.get(call.name)))
            pending.append(p)
        if not pending:
            return
        for p in pending:
            early = self._early.pop(p.tool_call_id, None)
            if early is not None:
                await self._apply_signal_decision(early, early=True)
        await steps.request_waits(inp.run_id, pending)
        self._show_waits()

    def _show_waits(self) -> None:
        waiting = bool(self._book.of_kind(WaitKind.APPROVAL))
        if waiting and self._status != RunStatus.WAITING_APPROVAL:
            self._status = RunStatus.WAITING_APPROVAL
            workflow.upsert_search_attributes(
                [SA_RUN_STATUS.value_set(self._status.value), SA_WAITING_APPROVAL.value_set(True)]
            )
        details = rules.waits_details(self._waits.values())
        if details:
            self._phase = "waiting"
            workflow.set_current_details(details)

    async def _decision(
        self, inp: StartRunInput, call: ToolCallRequest, wait: Wait
    ) -> RecordedDecision:
        """The call's decision, once made (or timed out) and recorded."""
        decided = await self._await_wait(inp, wait, lambda: wait.decision is not None)
        decision = (wait.decision if decided else None) or rules.timeout_rejection(call.id)
        wait.recorded = await steps.record_decision(
            inp.run_id,
            RecordedDecision(
                tool_call_id=call.id,
                name=call.name,
                decision=decision.decision,
                arguments=rules.decided_arguments(decision, call),
                decided_by=decision.decided_by or "unknown",
                reason=decision.reason,
            ),
        )
        self._book.settle(wait, f"{wait.recorded.decision} by {wait.recorded.decided_by}")
        await self._leave_waiting_if_clear(inp)
        return wait.recorded

    async def _await_wait(self, inp: StartRunInput, wait: Wait, done: Callable[[], bool]) -> bool:
        """Wait (durable timer) for a decision or result; False on timeout with 'reject'."""
        timeout = inp.config.approval_timeout_s
        try:
            await workflow.wait_condition(
                lambda: done() or self._cancel is not None,
                timeout=timeout,
            )
            self._raise_if_cancelled()
            return True
        except TimeoutError:
            if inp.config.approval_timeout_action == "fail":
                what = "approval" if wait.pending.kind == WaitKind.APPROVAL else "client result"
                raise ApplicationError(
                    f"{what} of {wait.pending.name} ({wait.pending.tool_call_id}) timed out "
                    f"after {timeout:g}s",
                    type=ErrorType.APPROVAL_TIMEOUT,
                    non_retryable=True,
                ) from None
            return False

    async def _leave_waiting_if_clear(self, inp: StartRunInput) -> None:
        if self._status != RunStatus.WAITING_APPROVAL:
            return
        if self._book.of_kind(WaitKind.APPROVAL):
            self._show_waits()
            return
        workflow.upsert_search_attributes([SA_WAITING_APPROVAL.value_set(False)])
        await self._set_status(inp, RunStatus.RUNNING)
        self._phase = "tools"

    async def _apply_signal_decision(self, d: ToolDecision, *, early: bool = False) -> None:
        refusal: Refusal | None = self._book.check_decision(d)
        if (
            refusal is None
            and early
            and rules.early_approval_refusal(d) is not None
            and workflow.patched(steps.PATCH_EARLY_DECISIONS)
        ):
            refusal = rules.early_approval_refusal(d)
        if refusal is None:
            self._waits[d.tool_call_id].decision = d
            return
        if refusal.type == ErrorType.ALREADY_DECIDED:
            return  # a duplicate: ignored
        await steps.record_invalid_decision(self._run_id, d, refusal)
