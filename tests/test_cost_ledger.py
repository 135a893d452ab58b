"""The cost ledger end to end: a scripted run's cost is genai-prices' own figure, exactly; an
unknown model's calls cost NULL with a warning; AGENTRUN_PRICES prices them; rollups per run and
session; a failed attempt's reported usage counts; `agentrun usage` prints the ledger."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.contracts import RunResult, StartRunInput
from agentrun.pricing import parse_prices
from agentrun.protocol.events import EventType
from agentrun.protocol.statuses import LlmCallStatus
from agentrun.settings import Settings
from agentrun.store import LlmCallValues, Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from tests.conftest import start_input
from tests.store_helpers import run_llm_calls
from tests.test_cli import agentrun, cli_env
from worker import build_worker
from workflows.agent import AgentRunWorkflow

PRICED_MODEL = "gpt-4o-mini"


def reported(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    """A usage object as OpenAI's endpoint reports it."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def their_price(model: str, usage: dict[str, Any]) -> Decimal:
    """genai-prices' own calculation of one call (the reference the ledger must equal)."""
    return calc_price(
        PriceUsage(
            input_tokens=usage["prompt_tokens"],
            output_tokens=usage["completion_tokens"],
            cache_read_tokens=usage["prompt_tokens_details"]["cached_tokens"],
            output_reasoning_tokens=usage["completion_tokens_details"]["reasoning_tokens"],
        ),
        model,
    ).total_price


def two_turns(prompt: str, first: dict[str, Any], second: dict[str, Any]) -> list[Reply]:
    return [
        Reply(
            text="Let me add that.",
            tool_calls=[ToolCallSpec("calculator", {"expression": "2+2"}, id=f"c-{prompt[-8:]}")],
            usage=first,
        ),
        Reply(text="It is 4.", usage=second),
    ]


async def execute(env: WorkflowEnvironment, settings: Settings, inp: StartRunInput) -> RunResult:
    return await env.client.execute_workflow(
        AgentRunWorkflow.run, inp, id=inp.run_id, task_queue=settings.task_queue
    )


async def test_the_cost_of_a_scripted_run_is_the_price_databases_own(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"add two and two {run_id}"
    first, second = reported(1200, 80, cached=1024, reasoning=16), reported(1500, 40, 1280)
    model_server.script(prompt, two_turns(prompt, first, second))
    inp = start_input(run_id, prompt, model=PRICED_MODEL, tools=["calculator"])
    result = await execute(temporal_env, settings, inp)
    assert result.status == "DONE"

    expected = [their_price(PRICED_MODEL, first), their_price(PRICED_MODEL, second)]
    calls = await run_llm_calls(repo, run_id)
    assert [c.cost_usd for c in calls] == expected
    assert [(c.cached_tokens, c.reasoning_tokens) for c in calls] == [(1024, 16), (1280, 0)]
    run = await repo.get_run(run_id)
    assert run.cost_usd == sum(expected) and run.unpriced_calls == 0
    assert (run.prompt_tokens, run.completion_tokens, run.cached_tokens) == (2700, 120, 2304)
    # The workflow's result carries the same exact figure (a Decimal through JSON).
    assert result.usage.cost_usd == sum(expected) and result.usage.unpriced_calls == 0
    assert (result.usage.cached_tokens, result.usage.reasoning_tokens) == (2304, 16)
    events = await repo.read_events(run_id, 0, limit=1000)
    usage_events = [e.data for e in events if e.type == EventType.LLM_USAGE]
    assert [Decimal(d["cost_usd"]) for d in usage_events] == expected
    assert usage_events[0]["cached_tokens"] == 1024


async def test_an_unknown_model_costs_null_with_a_warning_and_a_price_setting_prices_it(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = f"acme-selfhosted-{uuid.uuid4().hex[:8]}"
    session = f"s-{uuid.uuid4()}"
    usage = reported(1000, 100, cached=400)
    plain, priced = f"unpriced-{uuid.uuid4()}", f"priced-{uuid.uuid4()}"
    model_server.script(plain, [Reply(text="Hello.", usage=usage)])
    model_server.script(priced, [Reply(text="Hello again.", usage=usage)])

    with caplog.at_level(logging.WARNING, logger="agentrun.pricing"):
        async with build_worker(
            temporal_env.client, settings, repo, graceful_shutdown=timedelta(seconds=1)
        ):
            first = await execute(
                temporal_env,
                settings,
                start_input(f"run-{uuid.uuid4()}", plain, session, model=model),
            )
    assert first.status == "DONE"
    (call,) = await run_llm_calls(repo, first.run_id)
    assert call.cost_usd is None and call.prompt_tokens == 1000 and call.cached_tokens == 400
    assert first.usage.cost_usd is None and first.usage.unpriced_calls == 1
    assert any(model in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)

    own = parse_prices({model: {"input": "0.40", "output": "1.60", "cached_input": "0.10"}})
    contracted = settings.model_copy(update={"prices": own})
    async with build_worker(
        temporal_env.client, contracted, repo, graceful_shutdown=timedelta(seconds=1)
    ):
        second = await execute(
            temporal_env, settings, start_input(f"run-{uuid.uuid4()}", priced, session, model=model)
        )
    # (600 * 0.40 + 400 * 0.10 + 100 * 1.60) / 1e6 dollars, exactly.
    assert second.usage.cost_usd == Decimal("0.00044")
    (call,) = await run_llm_calls(repo, second.run_id)
    assert call.cost_usd == Decimal("0.00044")

    # The session's rollup: the priced part, and the one call that is not in it.
    used = await repo.session_usage(session)
    assert (used.cost_usd, used.unpriced_calls, used.prompt_tokens) == (Decimal("0.00044"), 1, 2000)


async def test_a_failed_attempt_counts_what_it_reported_in_the_turn_and_the_rollups(
    repo: Repository, run_id: str
) -> None:
    from agentrun.contracts import AgentConfig

    session = f"s-{uuid.uuid4()}"
    await repo.open_run(
        run_id=run_id, session_id=session, model="m", config=AgentConfig(), prompt="hi"
    )
    failed = LlmCallValues(
        prompt_tokens=100, completion_tokens=7, cost_usd=Decimal("0.0001"), error="stalled"
    )
    await repo.record_llm_call(
        run_id=run_id, turn=1, attempt=1, model="m", status=LlmCallStatus.ERROR, values=failed
    )
    # An attempt that reported nothing adds nothing and is not "unpriced".
    await repo.record_llm_call(
        run_id=run_id,
        turn=1,
        attempt=2,
        model="m",
        status=LlmCallStatus.ERROR,
        values=LlmCallValues(error="HTTP 500"),
    )
    ok = LlmCallValues(
        prompt_tokens=120, completion_tokens=9, cached_tokens=64, cost_usd=Decimal("0.00025")
    )
    await repo.record_model_turn(
        run_id=run_id,
        session_id=session,
        turn=1,
        attempt=3,
        model="m",
        text="ok",
        tool_calls=[],
        call_values=ok,
    )
    turn = await repo.turn_usage(run_id, 1)
    assert (turn.prompt_tokens, turn.completion_tokens, turn.cached_tokens) == (220, 16, 64)
    assert turn.cost_usd == Decimal("0.00035") and turn.unpriced_calls == 0
    run = await repo.get_run(run_id)
    assert (run.prompt_tokens, run.completion_tokens, run.cost_usd) == (220, 16, Decimal("0.00035"))
    assert run.llm_call_count == 3 and run.unpriced_calls == 0
    # A second turn whose model has no price: counted, never as zero dollars.
    await repo.record_model_turn(
        run_id=run_id,
        session_id=session,
        turn=2,
        attempt=1,
        model="m",
        text="ok",
        tool_calls=[],
        call_values=LlmCallValues(prompt_tokens=5, completion_tokens=1),
    )
    run = await repo.get_run(run_id)
    assert (run.cost_usd, run.unpriced_calls, run.prompt_tokens) == (Decimal("0.00035"), 1, 225)


async def test_agentrun_usage_prints_the_ledger(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    session = f"s-{uuid.uuid4()}"
    usage = reported(2000, 100, cached=1024)
    for n in range(2):
        prompt = f"usage {n} {session}"
        model_server.script(prompt, [Reply(text="Sure.", usage=usage)])
        inp = start_input(f"run-{uuid.uuid4()}", prompt, session, model=PRICED_MODEL)
        assert (await execute(temporal_env, settings, inp)).status == "DONE"
    one = their_price(PRICED_MODEL, usage)
    env = cli_env(settings)

    done = await agentrun(env, "usage", "--session", session, "--by", "model", "--json")
    assert done.code == 0, done.err
    (out,) = done.json_lines()
    (row,) = out["rows"]
    assert (row["key"], row["llm_calls"], row["cached_tokens"]) == (PRICED_MODEL, 2, 2048)
    assert Decimal(row["cost_usd"]) == 2 * one and isinstance(row["cost_usd"], str)
    assert Decimal(out["total"]["cost_usd"]) == 2 * one and out["total"]["total_tokens"] == 4200

    by_session = await agentrun(env, "usage", "--session", session, "--by", "session", "--json")
    assert [r["key"] for r in by_session.json_lines()[0]["rows"]] == [session]
    by_day = await agentrun(
        env, "usage", "--session", session, "--by", "day", "--since", "1h", "--json"
    )
    (day,) = by_day.json_lines()[0]["rows"]
    assert day["llm_calls"] == 2 and Decimal(day["cost_usd"]) == 2 * one
    table = await agentrun(env, "usage", "--session", session)
    assert (
        table.code == 0 and PRICED_MODEL in table.out and f"${(2 * one).normalize():f}" in table.out
    )

    later = await agentrun(env, "usage", "--session", session, "--since", "2999-01-01", "--json")
    assert (
        later.json_lines()[0]["rows"] == [] and later.json_lines()[0]["total"]["cost_usd"] is None
    )
    for args, code, says in (
        (("--since", "yesterday"), 2, "--since 'yesterday' is not a time"),
        (("--by", "tenant"), 2, "invalid choice"),
        (("--session", "no such session"), 2, "not a valid id"),
        (("--session", f"s-{uuid.uuid4()}"), 4, "no session"),
    ):
        bad = await agentrun(env, "usage", *args)
        assert bad.code == code and says in bad.err and "Traceback" not in bad.err, bad.err
