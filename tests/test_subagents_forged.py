"""A parent run takes the subrun_waits signal only from the children it started, about runs
under them: a forged notice (from any client of the namespace) changes neither its status
query nor its event log, nor its details; the real child's wait still shows."""

from __future__ import annotations

from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.contracts.people import PendingCall
from agentrun.contracts.subagents import SubRunWaits, child_run_id
from agentrun.protocol.events import EventType
from agentrun.protocol.names import Signal
from agentrun.protocol.statuses import Decision
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer
from tests.test_subagents import _child_waiting
from workflows.agent import AgentRunWorkflow


async def _shown(handle: object, repo: Repository, run_id: str) -> tuple[object, ...]:
    view = await handle.query(AgentRunWorkflow.status)  # type: ignore[attr-defined]
    meta = await handle.query(  # type: ignore[attr-defined]
        "__temporal_workflow_metadata", result_type=WorkflowMetadata
    )
    events = [(e.type, e.data) for e in await repo.read_events(run_id, 0, limit=10_000)]
    return view.model_dump(mode="json"), meta.current_details, events


async def test_a_forged_subrun_waits_signal_changes_nothing(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    handle, child_id, view = await _child_waiting(temporal_env, settings, model_server, run_id)
    ((entry,),) = [view.waiting_on]
    real_call = entry.calls[0]
    before = await _shown(handle, repo, run_id)
    fake_call = PendingCall(
        tool_call_id="forged",
        name="bash",
        kind="approval",
        arguments="{}",
        arguments_sha256="0" * 64,
        turn=1,
    )
    forged = [
        # not a child of this run at all
        SubRunWaits(run_id="elsewhere", via="elsewhere", agent="x", calls=[fake_call]),
        # a child id this run never derived (another tool call id)
        SubRunWaits(
            run_id=child_run_id(run_id, "researcher", "call_zz"),
            via=child_run_id(run_id, "researcher", "call_zz"),
            calls=[fake_call],
        ),
        # the real child as `via`, about a run that is not under it
        SubRunWaits(run_id=run_id, via=child_id, calls=[fake_call]),
        SubRunWaits(run_id="victim-run", via=child_id, calls=[fake_call]),
        # ... or about a look-alike id with nothing waiting
        SubRunWaits(run_id=child_id + "x", via=child_id, calls=[]),
    ]
    for notice in forged:
        await handle.signal(Signal.SUBRUN_WAITS, notice)
    # A query after the signals is answered after the workflow task that took them.
    after = await _shown(handle, repo, run_id)
    assert after == before
    waiting = (await handle.query(AgentRunWorkflow.status)).waiting_on
    assert [(w.run_id, [c.tool_call_id for c in w.calls]) for w in waiting] == [
        (child_id, [real_call.tool_call_id])
    ]

    # The real child's notices still count: deciding on it clears the wait and ends both.
    child = temporal_env.client.get_workflow_handle(child_id)
    await child.execute_update(
        AgentRunWorkflow.decide_tool_call,
        {"tool_call_id": "c_ask", "decision": Decision.APPROVE, "decided_by": "ops"},
    )
    assert (await handle.result()).status == "DONE"
    # Nothing forged reached the event log, even late: only the real child's wait.
    logged = [e.data for e in await repo.read_events(run_id, 0, limit=10_000)]
    assert "forged" not in str(logged)
    waits = [
        e
        for e in await repo.read_events(run_id, 0, limit=10_000)
        if e.type == EventType.SUBRUN_WAITING
    ]
    assert [(e.data["subrun_id"], e.data["tool_call_id"]) for e in waits] == [(child_id, "c_ask")]
