"""The budget rules without a server (workflows/budgets.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from agentrun.contracts import AgentConfig, SessionBudget, Usage
from agentrun.store.usage import check_session_budget
from workflows.budgets import active, breach, exceeded_event


def cost(value: str, tokens: int = 0, unpriced: int = 0) -> Usage:
    return Usage(
        cost_usd=Decimal(value), prompt_tokens=tokens, completion_tokens=0, unpriced_calls=unpriced
    )


def test_no_budget_is_never_reached_and_issues_nothing() -> None:
    assert not active(AgentConfig(), None)
    assert not active(AgentConfig(), SessionBudget())
    assert breach(AgentConfig(), None, cost("1000", 10**9, unpriced=3)) is None


def test_a_run_cost_budget_is_reached_at_its_limit_exactly() -> None:
    config = AgentConfig(max_cost_usd="0.30")
    assert breach(config, None, cost("0.299999999")) is None
    found = breach(config, None, cost("0.3"))
    assert found is not None and (found.budget, found.limit) == ("run", "max_cost_usd")
    assert (found.limit_value, found.used) == (Decimal("0.30"), Decimal("0.3"))
    assert "max_cost_usd 0.30 USD, used 0.3 USD" in found.message


def test_a_token_budget_counts_prompt_and_completion() -> None:
    config = AgentConfig(max_total_tokens=100)
    assert breach(config, None, Usage(prompt_tokens=60, completion_tokens=39)) is None
    found = breach(config, None, Usage(prompt_tokens=60, completion_tokens=40))
    assert found is not None and (found.limit, found.used) == ("max_total_tokens", 100)


def test_unpriced_calls_reach_a_cost_budget_but_not_a_token_one() -> None:
    found = breach(AgentConfig(max_cost_usd="5"), None, cost("0.01", unpriced=1))
    assert found is not None and found.unpriced_calls == 1
    assert "without a known price" in found.message
    assert breach(AgentConfig(max_total_tokens=10**6), None, cost("0", 10, unpriced=2)) is None


def test_a_session_budget_adds_what_the_session_used_before() -> None:
    session = SessionBudget(max_total_tokens=1000, used_before=Usage(prompt_tokens=990))
    assert breach(AgentConfig(), session, Usage(completion_tokens=9)) is None
    found = breach(AgentConfig(), session, Usage(completion_tokens=10))
    assert found is not None and (found.budget, found.used) == ("session", 1000)
    # Already spent before the run: reached before its first model turn.
    spent = SessionBudget(max_cost_usd=Decimal("1"), used_before=cost("1.5"))
    assert breach(AgentConfig(), spent, Usage()) is not None
    # The run's own budget is named first when both are reached.
    both = breach(AgentConfig(max_total_tokens=5), session, Usage(prompt_tokens=20))
    assert both is not None and both.budget == "run"


def test_the_event_carries_the_figures_as_exact_strings() -> None:
    session = SessionBudget(max_cost_usd=Decimal("0.5"), used_before=cost("0.45", 100))
    run = cost("0.05", 20)
    found = breach(AgentConfig(), session, run)
    assert found is not None
    data = exceeded_event(found, "model_turn", 3, run, session)
    dumped = data.model_dump(mode="json")
    assert dumped["budget"] == "session" and dumped["limit_value"] == "0.5"
    assert dumped["used"] == "0.50" and dumped["session_cost_usd"] == "0.50"
    assert dumped["run_cost_usd"] == "0.05" and dumped["run_total_tokens"] == 20
    assert dumped["session_total_tokens"] == 120 and dumped["turn"] == 3


@pytest.mark.parametrize(
    "fields",
    [
        {"max_cost_usd": "0"},
        {"max_cost_usd": "-1"},
        {"max_cost_usd": "NaN"},
        {"max_cost_usd": "lots"},
        {"max_total_tokens": 0},
        {"max_total_tokens": 10**13},
    ],
)
def test_bad_run_budgets_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as err:
        AgentConfig(**fields)  # type: ignore[arg-type]
    assert next(iter(fields)) in str(err.value)


@pytest.mark.parametrize(
    ("max_cost", "max_tokens", "says"),
    [
        (Decimal(0), None, "more than 0"),
        (Decimal("NaN"), None, "more than 0"),
        (Decimal("1e12"), None, "at most"),
        (None, 0, "max_total_tokens"),
        (None, -5, "max_total_tokens"),
    ],
)
def test_bad_session_budgets_are_refused(
    max_cost: Decimal | None, max_tokens: int | None, says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        check_session_budget(max_cost, max_tokens)
    check_session_budget(None, None)
    check_session_budget(Decimal("0.01"), 1)
