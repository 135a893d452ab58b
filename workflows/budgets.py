"""Budgets that cannot be bypassed: the run's own (AgentConfig max_cost_usd, max_total_tokens)
and its session's (stored on the session, handed to the run in OpenedRun when it opened).

The workflow checks them before every model turn and every tool batch, from the usage its own
activities returned (self._usage) and the session's usage before the run (OpenedRun): never a
database read from workflow code, so a replay decides the same. A budget is reached when the
usage is at or over the limit; the run then records a `budget.exceeded` event, gives the calls
of the batch it will not run an error result, and fails with ErrorType.BUDGET_EXCEEDED. The
model turn before a check can overshoot a limit by what that one turn used (max_output_tokens
bounds it); no model call follows.

A cost budget whose calls include unpriced ones (no price known for the model) cannot be
kept, so it counts as reached: a cost budget is never bypassed by an unknown price. The open
refuses a run whose model has no price when a cost budget applies (activities/runs.py), so
this is the second line.

Runs without a budget issue no command here: histories recorded before budgets replay.
`breach` is pure (tests/unit/test_budgets.py); BudgetSteps is the workflow's part.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.runs import RunActivities
    from agentrun.contracts import (
        AgentConfig,
        AppendEventInput,
        OutcomeKind,
        SessionBudget,
        StartRunInput,
        ToolCallRequest,
        Usage,
    )
    from agentrun.protocol.events import BudgetExceededData, EventType
    from agentrun.protocol.names import ErrorType
    from agentrun.store.events import event_key
    from workflows.options import BOOKKEEPING
    from workflows.rules import Outcome
    from workflows.state import RunState

BEFORE_MODEL_TURN = "model_turn"
BEFORE_TOOL_BATCH = "tool_batch"


@dataclass(frozen=True)
class Breach:
    """Which budget was reached, by how much."""

    budget: str  # "run" or "session"
    limit: str  # "max_cost_usd" or "max_total_tokens"
    limit_value: Decimal | int
    used: Decimal | int
    unpriced_calls: int = 0

    @property
    def message(self) -> str:
        unit = " USD" if self.limit == "max_cost_usd" else " tokens"
        text = (
            f"the {self.budget}'s budget is reached: {self.limit} {self.limit_value}{unit}, "
            f"used {self.used}{unit}"
        )
        if self.unpriced_calls:
            text += (
                f" and {self.unpriced_calls} model call(s) without a known price (set "
                "AGENTRUN_PRICES for the model)"
            )
        return text


def active(config: AgentConfig, session: SessionBudget | None) -> bool:
    return (
        config.max_cost_usd is not None
        or config.max_total_tokens is not None
        or (
            session is not None
            and (session.max_cost_usd is not None or session.max_total_tokens is not None)
        )
    )


def _over(
    budget: str, max_cost: Decimal | None, max_tokens: int | None, used: Usage
) -> Breach | None:
    if max_cost is not None:
        cost = used.cost_usd or Decimal(0)
        if cost >= max_cost or used.unpriced_calls:
            return Breach(budget, "max_cost_usd", max_cost, cost, used.unpriced_calls)
    if max_tokens is not None and used.total_tokens >= max_tokens:
        return Breach(budget, "max_total_tokens", max_tokens, used.total_tokens)
    return None


def breach(config: AgentConfig, session: SessionBudget | None, run: Usage) -> Breach | None:
    """The first budget reached (the run's, then the session's), or None."""
    found = _over("run", config.max_cost_usd, config.max_total_tokens, run)
    if found is None and session is not None:
        used = session.used_before.add(run)
        found = _over("session", session.max_cost_usd, session.max_total_tokens, used)
    return found


def exceeded_event(
    found: Breach, before: str, turn: int, run: Usage, session: SessionBudget | None
) -> BudgetExceededData:
    """The budget.exceeded event's payload: the figures of the run and of its session."""
    total = session.used_before.add(run) if session is not None else None
    return BudgetExceededData(
        budget=found.budget,
        limit=found.limit,
        limit_value=str(found.limit_value),
        used=str(found.used),
        turn=turn,
        before=before,
        run_cost_usd=None if run.cost_usd is None else str(run.cost_usd),
        run_total_tokens=run.total_tokens,
        session_cost_usd=None if total is None or total.cost_usd is None else str(total.cost_usd),
        session_total_tokens=None if total is None else total.total_tokens,
        unpriced_calls=(total or run).unpriced_calls,
    )


class BudgetSteps(RunState):
    """The workflow's budget check (two call lines in workflows/loop.py)."""

    async def _check_budget(
        self, inp: StartRunInput, before: str, calls: Sequence[ToolCallRequest] = ()
    ) -> None:
        """Stop the run (ApplicationError BudgetExceeded) when a budget is reached; the
        `calls` of a batch that will not run get an error result first."""
        session = self._opened.session_budget if self._opened is not None else None
        if not active(inp.config, session):
            return
        found = breach(inp.config, session, self._usage)
        if found is None:
            return
        turn = self._turn + 1 if before == BEFORE_MODEL_TURN else self._turn
        data = exceeded_event(found, before, turn, self._usage, session)
        outcome = Outcome(OutcomeKind.ABANDONED, f"not run: {found.message}")
        await asyncio.gather(*(self._record_outcome(inp, c, outcome) for c in calls))
        await workflow.execute_local_activity_method(
            RunActivities.append_event,
            AppendEventInput(
                run_id=inp.run_id,
                type=EventType.BUDGET_EXCEEDED,
                data=data.model_dump(mode="json"),
                key=event_key(EventType.BUDGET_EXCEEDED),
            ),
            **BOOKKEEPING,
            summary="budget exceeded",
        )
        raise ApplicationError(found.message, type=ErrorType.BUDGET_EXCEEDED, non_retryable=True)
