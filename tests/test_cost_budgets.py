"""Budgets that cannot be bypassed, on a real Temporal and PostgreSQL: a run's token or cost
budget stops it at the right point (counted in llm_calls), a session's budget stops its next
run before any model call, a cost budget for an unpriced model is refused at open, and
`agentrun budget` sets and shows a session's budget."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.client import BudgetExceeded, RunRefused, error_from
from agentrun.contracts import StartRunInput
from agentrun.protocol.events import EventType
from agentrun.protocol.names import ErrorType
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from tests.conftest import start_input
from tests.store_helpers import run_llm_calls, run_tool_calls
from tests.test_cli import agentrun, cli_env
from tests.test_cost_ledger import PRICED_MODEL, execute, reported, their_price
from workflows.agent import AgentRunWorkflow

USAGE = reported(1000, 100, cached=512)  # 1,100 tokens a turn


def adding_turns(prompt: str, n: int) -> list[Reply]:
    """n turns that each ask for the calculator, then an answer."""
    return [
        Reply(
            text=f"Step {i}.",
            tool_calls=[ToolCallSpec("calculator", {"expression": f"{i}+1"}, id=f"call-{i}")],
            usage=USAGE,
        )
        for i in range(1, n + 1)
    ] + [Reply(text="Done.", usage=USAGE)]


async def fails_over_budget(
    env: WorkflowEnvironment, settings: Settings, inp: StartRunInput
) -> BudgetExceeded:
    with pytest.raises(WorkflowFailureError) as err:
        await execute(env, settings, inp)
    cause = err.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == ErrorType.BUDGET_EXCEEDED
    typed = error_from(err.value, run_id=inp.run_id)
    assert isinstance(typed, BudgetExceeded)
    return typed


async def budget_event(repo: Repository, run_id: str) -> dict[str, object]:
    events = await repo.read_events(run_id, 0, limit=1000)
    (event,) = [e for e in events if e.type == EventType.BUDGET_EXCEEDED]
    # The event comes before the run's end.
    assert events[-1].type == EventType.RUN_STATUS and events[-1].data["status"] == "FAILED"
    return dict(event.data)


async def test_a_token_budget_smaller_than_the_work_stops_before_the_next_tool_batch(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"count up {run_id}"
    model_server.script(prompt, adding_turns(prompt, 4))
    inp = start_input(
        run_id, prompt, model=PRICED_MODEL, tools=["calculator"], max_total_tokens=2000
    )
    typed = await fails_over_budget(temporal_env, settings, inp)
    assert "max_total_tokens 2000 tokens, used 2200 tokens" in str(typed)

    # Turn 1 (1,100 tokens) and its tools ran; turn 2 reached 2,200: its call did not run.
    assert len(await run_llm_calls(repo, run_id)) == 2
    assert len(model_server.requests_for(prompt)) == 2
    calls = {c.tool_call_id: c for c in await run_tool_calls(repo, run_id)}
    assert calls["call-1"].result == "2" and not calls["call-1"].is_error
    assert calls["call-2"].is_error and "budget is reached" in (calls["call-2"].result or "")
    run = await repo.get_run(run_id)
    assert run.status == "FAILED" and "budget is reached" in (run.error or "")
    data = await budget_event(repo, run_id)
    assert (data["budget"], data["limit"], data["before"], data["turn"]) == (
        "run",
        "max_total_tokens",
        "tool_batch",
        2,
    )
    assert (data["limit_value"], data["used"], data["run_total_tokens"]) == ("2000", "2200", 2200)
    assert Decimal(str(data["run_cost_usd"])) == 2 * their_price(PRICED_MODEL, USAGE)


async def test_a_cost_budget_is_reached_at_its_limit_exactly(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"spend {run_id}"
    model_server.script(prompt, adding_turns(prompt, 3))
    one_turn = their_price(PRICED_MODEL, USAGE)
    inp = start_input(
        run_id, prompt, model=PRICED_MODEL, tools=["calculator"], max_cost_usd=str(one_turn)
    )
    await fails_over_budget(temporal_env, settings, inp)
    assert len(await run_llm_calls(repo, run_id)) == 1
    data = await budget_event(repo, run_id)
    assert (data["limit"], data["before"], data["turn"]) == ("max_cost_usd", "tool_batch", 1)
    assert Decimal(str(data["used"])) == one_turn == Decimal(str(data["limit_value"]))
    (call,) = await run_tool_calls(repo, run_id)
    assert call.is_error  # never ran, and not left open


async def test_a_session_budget_stops_the_next_run_before_it_calls_the_model(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    session = f"s-{uuid.uuid4()}"
    env = cli_env(settings)
    first = f"first {session}"
    model_server.script(first, [Reply(text="Hi.", usage=USAGE)])
    inp = start_input(f"run-{uuid.uuid4()}", first, session, model=PRICED_MODEL)
    assert (await execute(temporal_env, settings, inp)).status == "DONE"

    done = await agentrun(env, "budget", session, "--max-total-tokens", "1000", "--json")
    assert done.code == 0, done.err
    (shown,) = done.json_lines()
    assert shown["max_total_tokens"] == 1000 and shown["used"]["total_tokens"] == 1100

    second = f"second {session}"
    model_server.script(second, [Reply(text="Never.", usage=USAGE)])
    blocked = start_input(f"run-{uuid.uuid4()}", second, session, model=PRICED_MODEL)
    await fails_over_budget(temporal_env, settings, blocked)
    assert await run_llm_calls(repo, blocked.run_id) == []
    assert model_server.requests_for(second) == []
    data = await budget_event(repo, blocked.run_id)
    assert (data["budget"], data["before"], data["turn"]) == ("session", "model_turn", 1)
    assert (data["used"], data["session_total_tokens"], data["run_total_tokens"]) == (
        "1100",
        1100,
        0,
    )

    # Raised, the session runs again (the failed run freed it).
    raised = await agentrun(env, "budget", session, "--max-total-tokens", "100000")
    assert raised.code == 0 and "100000 tokens" in raised.out, raised.err
    again = start_input(f"run-{uuid.uuid4()}", second, session, model=PRICED_MODEL)
    assert (await execute(temporal_env, settings, again)).status == "DONE"


async def test_a_cost_budget_for_a_model_without_a_price_is_refused_at_open(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    run_id: str,
) -> None:
    inp = start_input(run_id, "hello", model="acme-unpriced-7b", max_cost_usd="1")
    with pytest.raises(WorkflowFailureError) as err:
        await temporal_env.client.execute_workflow(
            AgentRunWorkflow.run, inp, id=run_id, task_queue=settings.task_queue
        )
    typed = error_from(err.value, run_id=run_id)
    assert isinstance(typed, RunRefused) and typed.reason_type == ErrorType.INVALID_CONFIG
    assert "no price is known for model 'acme-unpriced-7b'" in str(typed)
    assert await repo.find_run(run_id) is None  # nothing written, nothing spent


async def test_agentrun_budget_refuses_bad_input_and_changes_nothing(
    settings: Settings, repo: Repository
) -> None:
    env = cli_env(settings)
    session = f"s-{uuid.uuid4()}"
    done = await agentrun(env, "budget", session, "--max-cost-usd", "2.50", "--json")
    assert done.code == 0, done.err
    assert done.json_lines()[0]["max_cost_usd"] == "2.50"
    for args, code, says in (
        (("--max-cost-usd", "abc"), 2, "not a number"),
        (("--max-cost-usd", "0"), 2, "more than 0"),
        (("--max-cost-usd", "NaN"), 2, "more than 0"),
        (("--max-total-tokens", "0"), 2, "must be 1 or more"),
        (("--clear", "--max-total-tokens", "5"), 2, "--clear"),
    ):
        bad = await agentrun(env, "budget", session, *args)
        assert bad.code == code and says in bad.err and "Traceback" not in bad.err, bad.err
    unchanged = await repo.get_session(session)
    assert (unchanged.max_cost_usd, unchanged.max_total_tokens) == (Decimal("2.50"), None)
    # Another limit keeps the first; --clear removes both.
    await agentrun(env, "budget", session, "--max-total-tokens", "5000")
    both = await repo.get_session(session)
    assert (both.max_cost_usd, both.max_total_tokens) == (Decimal("2.50"), 5000)
    cleared = await agentrun(env, "budget", session, "--clear", "--json")
    assert cleared.json_lines()[0]["max_cost_usd"] is None
    missing = await agentrun(env, "budget", f"s-{uuid.uuid4()}")
    assert missing.code == 4 and "no session" in missing.err
