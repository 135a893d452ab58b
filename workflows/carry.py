"""Very long runs: the run's workflow continues-as-new at a turn boundary, and its next execution
takes over from the carry (agentrun.contracts.RunCarry) instead of opening the run again.

Each execution's history then holds at most `continue_as_new_after_turns` turns (or what
Temporal lets grow until it suggests a new execution), however many turns the run takes. The
run id (the workflow id), its record and its event log stay the same; clients address the run
by its workflow id only, so updates, signals and queries reach whichever execution is current.

The boundary is the top of the loop: the last tool batch is fully done, no call waits, and no
update or signal handler is still running. What a handler may still be doing there is the cancel
update, which cancels the run instead. Nothing here runs for a run whose history was recorded
before it (workflow.patched), so runs in flight replay unchanged.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from agentrun.contracts import RunCarry, StartRunInput, ToolDecision
    from agentrun.protocol.names import ErrorType
    from workflows import steps
    from workflows.state import RunState

__all__ = [
    "MAX_CARRIED_EARLY_CHARS",
    "MAX_CARRIED_SETTLED",
    "CarrySteps",
    "continue_due",
    "make_carry",
    "restore",
]

# How many settled waits a carry remembers (the latest): enough that a late second decision is
# refused as already decided, few enough that the carry stays small however long the run.
MAX_CARRIED_SETTLED = 256
# Early decisions carried at most, in characters of JSON: a payload over Temporal's 2 MB limit
# would fail the continue-as-new for ever, and anyone who can signal can send early decisions.
MAX_CARRIED_EARLY_CHARS = 256_000


def continue_due(turns_here: int, after_turns: int | None, suggested: bool) -> bool:
    """Whether the run continues-as-new at this boundary: Temporal suggests it (the history
    grows large), or this execution has taken `after_turns` turns (None: only when suggested).
    Never before an execution's first turn."""
    if turns_here < 1:
        return False
    return suggested or (after_turns is not None and turns_here >= after_turns)


def _bounded_early(early: dict[str, ToolDecision]) -> dict[str, ToolDecision]:
    """The first early decisions, up to MAX_CARRIED_EARLY_CHARS of JSON."""
    kept: dict[str, ToolDecision] = {}
    size = 0
    for call_id, decision in early.items():
        size += len(call_id) + len(decision.model_dump_json())
        if size > MAX_CARRIED_EARLY_CHARS:
            break
        kept[call_id] = decision
    return kept


def make_carry(state: RunState, execution: int) -> RunCarry:
    """What the next execution (number `execution`) needs of this one."""
    if state._opened is None:
        raise RuntimeError("a run continues-as-new only after it was opened")
    settled = list(state._book.settled.items())[-MAX_CARRIED_SETTLED:]
    return RunCarry(
        opened=state._opened,
        turn=state._turn,
        tool_calls_used=state._tool_calls_used,
        usage=state._usage,
        subrun_usage=state._subrun_usage,
        status=state._status,
        early=_bounded_early(state._early),
        settled=dict(settled),
        cancel=state._cancel,
        execution=execution,
    )


def restore(state: RunState, carry: RunCarry) -> None:
    """Take the carried state over (the run's open is not repeated)."""
    state._opened = carry.opened
    state._model = carry.opened.model
    state._tools = {t.name: t for t in carry.opened.tools}
    state._turn = carry.turn
    state._tool_calls_used = carry.tool_calls_used
    state._usage = carry.usage
    state._subrun_usage = carry.subrun_usage
    state._status = carry.status
    state._phase = carry.status.lower()
    # A signal can reach this execution before it takes over (in its first workflow task):
    # the carried decisions came first and win, as the first decision for a call always does.
    state._early = {**state._early, **carry.early}
    state._book.settled.update(carry.settled)
    if carry.cancel is not None and state._cancel is None:
        state._cancel = carry.cancel


class CarrySteps(RunState):
    """Continue-as-new at a turn boundary, and take over from the carry."""

    # The turn this execution started after, and its number in the run's chain of executions.
    _turn_at_start = 0
    _execution = 1

    def _start_resume(self, inp: StartRunInput) -> workflow.ActivityHandle[None]:
        """Take the run over from the carry, after the store agrees that this workflow chain
        opened it. A carry in a workflow that is not a continued execution (started with one
        by hand, say) is refused: only the run's own continue-as-new makes one."""
        carry = inp.carry
        info = workflow.info()
        if carry is None or info.continued_run_id is None:
            raise ApplicationError(
                "a run's carry is only taken over by its own continue-as-new; start runs "
                "without one",
                type=ErrorType.INVALID_INPUT,
                non_retryable=True,
            )
        restore(self, carry)
        self._turn_at_start = carry.turn
        self._execution = carry.execution
        return steps.start_resume_run(inp.run_id, info.first_execution_run_id)

    async def _continue_if_due(self, inp: StartRunInput) -> None:
        """At a turn boundary: continue-as-new when it is due (continue_due)."""
        if not continue_due(
            self._turn - self._turn_at_start,
            inp.config.continue_as_new_after_turns,
            workflow.info().is_continue_as_new_suggested(),
        ) or not workflow.patched(steps.PATCH_CONTINUE_AS_NEW):
            return
        # An update still running would lose its answer with this execution; the cancel
        # update never finishes here, it cancels this task instead.
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._raise_if_cancelled()
        workflow.set_current_details(
            f"continuing as new after turn {self._turn} (execution {self._execution + 1})"
        )
        carry = make_carry(self, self._execution + 1)
        if len(carry.early) < len(self._early):
            workflow.logger.warning(
                "%d early decision(s) over %d characters are not carried over",
                len(self._early) - len(carry.early),
                MAX_CARRIED_EARLY_CHARS,
            )
        workflow.continue_as_new(inp.model_copy(update={"carry": carry}))
