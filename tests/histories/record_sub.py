"""Record histories of runs with sub-agents (parents and their children) into
tests/histories/<label>/, with record.py's servers and helpers:

    python -m tests.histories.record_sub v6-sub

Each scenario runs a parent whose model delegates to a sub-agent; `*_parent` files are the
parent's history, `*_child` ones the child's (a child run: its parent link, its signals to
the parent, its cancel by the parent).
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any

from temporalio.client import Client, WorkflowHandle

from agentrun.contracts import CancelAnswer, CancelRequest, ToolDecision
from agentrun.contracts.subagents import child_run_id
from agentrun.protocol.statuses import Decision
from agentrun.testing.offline_model import Fault, OfflineModelServer, Reply, ToolCallSpec
from tests.histories import record as rec
from workflows.agent import AgentRunWorkflow

RESEARCHER = {"system_prompt": "You research.", "tools": ["calculator"], "max_turns": 4}
ASKING = {**RESEARCHER, "approval_overrides": {"calculator": "needs_approval"}}


def _delegate(task: str) -> Reply:
    return Reply(
        text="Delegating.",
        tool_calls=[ToolCallSpec("delegate_to_researcher", {"task": task}, id="call_d1")],
    )


async def _parent_and_child(
    client: Client,
    tq: str,
    model: OfflineModelServer,
    rid: str,
    spec: dict[str, Any],
    child: list[Any],
) -> tuple[WorkflowHandle[Any, Any], WorkflowHandle[Any, Any]]:
    prompt, task = f"orchestrate {rid}", f"sub task {uuid.uuid4().hex}"
    model.script(prompt, [_delegate(task), Reply(text="The parent's answer.")])
    model.script(task, child)
    h = await rec._start(client, tq, rid, prompt, tools=[], subagents={"researcher": spec})
    return h, client.get_workflow_handle(child_run_id(rid, "researcher", "call_d1"))


_CALC = [
    Reply(tool_calls=[ToolCallSpec("calculator", {"expression": "6*7"}, id="c1")]),
    Reply(text="It is 42."),
]


async def _delegated(
    client: Client, tq: str, model: OfflineModelServer, rid: str, which: int
) -> Any:
    handles = await _parent_and_child(client, tq, model, rid, RESEARCHER, _CALC)
    await handles[0].result()
    return handles[which]


async def _approved(
    client: Client, tq: str, model: OfflineModelServer, rid: str, which: int
) -> Any:
    parent, child = await _parent_and_child(client, tq, model, rid, ASKING, _CALC)
    pending = await _parent_shows_wait(parent)
    await child.execute_update(
        AgentRunWorkflow.decide_tool_call,
        ToolDecision(
            tool_call_id=pending.tool_call_id, decision=Decision.APPROVE, decided_by="recorder"
        ),
    )
    await parent.result()
    return (parent, child)[which]


async def _parent_shows_wait(parent: WorkflowHandle[Any, Any], timeout: float = 30) -> Any:
    """The child's pending call, once the parent's status shows it."""

    async def poll() -> Any:
        while True:
            view = await parent.query(AgentRunWorkflow.status)
            if view.waiting_on:
                return view.waiting_on[0].calls[0]
            await asyncio.sleep(0.1)

    return await asyncio.wait_for(poll(), timeout)


async def _cancelled(
    client: Client, tq: str, model: OfflineModelServer, rid: str, which: int
) -> Any:
    parent, child = await _parent_and_child(client, tq, model, rid, ASKING, _CALC)
    await _parent_shows_wait(parent)
    await parent.execute_update(
        "cancel", CancelRequest(reason="stop", requested_by="recorder"), result_type=CancelAnswer
    )
    await rec._closed(parent)
    await rec._closed(child)
    return (parent, child)[which]


async def subrun_failed(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    parent, _ = await _parent_and_child(
        client, tq, model, rid, RESEARCHER, [Fault("http", 400, "bad request")]
    )
    await parent.result()
    return parent


def _pick(scenario: Any, which: int) -> rec.Scenario:
    async def run(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
        return await scenario(client, tq, model, rid, which)

    return run


SCENARIOS: dict[str, rec.Scenario] = {
    "delegate_parent": _pick(_delegated, 0),
    "delegate_child": _pick(_delegated, 1),
    "subrun_approval_parent": _pick(_approved, 0),
    "subrun_approval_child": _pick(_approved, 1),
    "subrun_cancel_parent": _pick(_cancelled, 0),
    "subrun_cancel_child": _pick(_cancelled, 1),
    "subrun_failed": subrun_failed,
}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m tests.histories.record_sub <label>")
    rec.SCENARIOS = SCENARIOS  # record.record runs the module's SCENARIOS
    asyncio.run(rec.record(rec.HERE / args[0]))


if __name__ == "__main__":
    main()
