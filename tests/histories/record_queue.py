"""Record the histories of session queues (agentrun.SessionQueue) and of a run interrupted by a
newer message into tests/histories/<label>/ (default v6-queue), with record.py's servers,
worker and writer:

    python -m tests.histories.record_queue [label]
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from agentrun.client import AgentRunClient
from agentrun.contracts import ToolDecision
from agentrun.contracts.queue import queue_workflow_id
from agentrun.protocol.statuses import Decision, RunStatus
from agentrun.settings import Settings, load_settings
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply
from tests.histories import record as base
from workflows.agent import AgentRunWorkflow

_settings: list[Settings] = []


async def _until(check: Any, tries: int = 600) -> None:
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"not within {tries / 10:g} s: {check}")


async def _send(client: Client, tq: str, prompt: str, session: str, if_busy: str) -> Any:
    """Send a message with a policy; returns once its run has ended."""
    repo = Repository.connect(_settings[-1].sqlalchemy_url, pool_size=1)
    try:
        handle = await AgentRunClient(client, tq, store=repo).start(
            prompt, session_id=session, config={"tools": []}, if_busy=if_busy
        )
        return await asyncio.wait_for(handle.result(), 60)
    finally:
        await repo.close()


async def _first(client: Client, tq: str, rid: str, prompt: str, **config: Any) -> Any:
    inp = base._input(rid, prompt, **config)
    inp.session_id = f"s-{rid}"
    return await client.start_workflow(AgentRunWorkflow.run, inp, id=rid, task_queue=tq)


async def _pump_done(client: Client, session: str) -> WorkflowHandle[Any, Any]:
    pump = client.get_workflow_handle(queue_workflow_id(session))
    await asyncio.wait_for(pump.result(), 60)
    return pump


async def queue_enqueue(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    """A message queued behind a run that waits for approval, started when that run ends."""
    model.script(f"first {rid}", [base._bash("echo hi"), Reply(text="First done.")])
    model.script(f"second {rid}", [Reply(text="Second done.")])
    first = await _first(client, tq, f"{rid}-a", f"first {rid}", tools=["bash"])
    await base._wait_pending(first)
    second = asyncio.create_task(_send(client, tq, f"second {rid}", f"s-{rid}-a", "enqueue"))
    pump = client.get_workflow_handle(queue_workflow_id(f"s-{rid}-a"))

    async def pump_sleeps() -> bool:  # it looked, and waits for the first run to end
        try:
            events = (await pump.fetch_history()).events
        except RPCError:  # not started yet
            return False
        return bool(events) and events[-1].event_type == EventType.EVENT_TYPE_TIMER_STARTED

    await _until(pump_sleeps)
    await first.execute_update(
        AgentRunWorkflow.decide_tool_call,
        ToolDecision(tool_call_id="call_bash", decision=Decision.REJECT, reason="later"),
    )
    assert (await second).status == RunStatus.DONE
    return await _pump_done(client, f"s-{rid}-a")


async def _interrupted(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    model.script(f"long {rid}", [Reply(text="partial " * 400, chunk_chars=8, delay_s=0.03)])
    model.script(f"stop {rid}", [Reply(text="New answer.")])
    first = await _first(client, tq, f"{rid}-a", f"long {rid}", tools=[])

    async def streaming() -> bool:
        view = await first.query(AgentRunWorkflow.status)
        return bool(view.phase == "model" and view.turn == 1)

    await _until(streaming)
    await asyncio.sleep(0.5)
    assert (await _send(client, tq, f"stop {rid}", f"s-{rid}-a", "interrupt")).status == "DONE"
    return first


async def queue_interrupt(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    """A message that interrupts the active run: the queue stops it, then starts its own."""
    await _interrupted(client, tq, model, rid)
    return await _pump_done(client, f"s-{rid}-a")


async def interrupted_run(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    """The run a newer message interrupted (cancelled by the queue's signal mid-stream)."""
    first = await _interrupted(client, tq, model, rid)
    await base._closed(first)
    return first


SCENARIOS: dict[str, base.Scenario] = {
    "queue_enqueue": queue_enqueue,
    "queue_interrupt": queue_interrupt,
    "interrupted_run": interrupted_run,
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
    asyncio.run(base.record(base.HERE / (args[0] if args else "v6-queue")))


if __name__ == "__main__":
    main()
