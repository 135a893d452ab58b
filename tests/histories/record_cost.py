"""Record the histories of priced runs and runs stopped by a budget into tests/histories/<label>/
(default v6-cost), with record.py's servers, worker and writer:

    python -m tests.histories.record_cost [label]
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from decimal import Decimal
from typing import Any

from temporalio.client import Client

from agentrun.settings import Settings, load_settings
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from tests.histories import record as base
from workflows.agent import AgentRunWorkflow

USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 100,
    "total_tokens": 1100,
    "prompt_tokens_details": {"cached_tokens": 512},
    "completion_tokens_details": {"reasoning_tokens": 10},
}
_settings: list[Settings] = []


def _adding(n: int) -> list[Reply]:
    return [
        Reply(
            text=f"Step {i}.",
            tool_calls=[ToolCallSpec("calculator", {"expression": f"{i}+1"}, id=f"c{i}")],
            usage=USAGE,
        )
        for i in range(1, n + 1)
    ] + [Reply(text="Done.", usage=USAGE)]


async def priced(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    prompt = f"priced {rid}"
    model.script(prompt, _adding(1))
    h = await base._start(
        client, tq, rid, prompt, model="gpt-4o-mini", tools=["calculator"], max_cost_usd="5"
    )
    await h.result()
    return h


async def run_budget(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    prompt = f"run budget {rid}"
    model.script(prompt, _adding(3))
    h = await base._start(
        client, tq, rid, prompt, model="gpt-4o-mini", tools=["calculator"], max_total_tokens=2000
    )
    await base._closed(h)
    return h


async def session_budget(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    """A session over its budget: the run stops before its first model turn."""
    session = f"s-{uuid.uuid4().hex[:12]}"
    first = f"first {rid}"
    model.script(first, [Reply(text="Hi.", usage=USAGE)])
    inp = base._input(f"{rid}-first", first, model="gpt-4o-mini")
    inp.session_id = session
    await client.execute_workflow(AgentRunWorkflow.run, inp, id=inp.run_id, task_queue=tq)
    repo = Repository.connect(_settings[-1].sqlalchemy_url, pool_size=1)
    try:
        await repo.set_session_budget(session, Decimal("0.0001"), None)
    finally:
        await repo.close()
    second = base._input(rid, f"second {rid}", model="gpt-4o-mini")
    second.session_id = session
    h = await client.start_workflow(AgentRunWorkflow.run, second, id=rid, task_queue=tq)
    await base._closed(h)
    return h


SCENARIOS: dict[str, base.Scenario] = {
    "priced": priced,
    "run_budget": run_budget,
    "session_budget": session_budget,
}


def _keep_settings(**overrides: Any) -> Settings:
    settings = load_settings(**overrides)
    _settings.append(settings)
    return settings


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    # record() plays its module's SCENARIOS and builds its settings with load_settings.
    base.SCENARIOS = SCENARIOS
    base.load_settings = _keep_settings
    asyncio.run(base.record(base.HERE / (args[0] if args else "v6-cost")))


if __name__ == "__main__":
    main()
