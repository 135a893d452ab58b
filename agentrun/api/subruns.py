"""The sub-run links of GET /v1/runs/{id} (README "Sub-agents"): the run's parent, its children
(run id, agent, status) and the child approvals it waits on, so an app finds and decides a
child's approval (POST /v1/runs/{child}/tool-calls/{call}/decision) from the parent.

Children are the runs whose parent_run_id is this run, of the caller's tenant only, plus any
the run's subrun.started events name that no worker has opened yet (QUEUED). `waiting_on`
comes from the parent's status query while it is live (bounded: empty when no worker answers
in time), and lists only runs of the caller's tenant."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import select

from agentrun.api.lookups import Services
from agentrun.client import run_status
from agentrun.db.models import Run, RunEvent
from agentrun.protocol.event_base import EventType
from agentrun.protocol.http import PendingCallView, SubRunView, WaitingOnView
from agentrun.protocol.statuses import RunStatus

log = logging.getLogger(__name__)

# How long GET /v1/runs/{id} waits for a live parent's status query (a worker answers it).
STATUS_QUERY_TIMEOUT_S = 5.0


def _agent_from_id(parent_id: str, child_id: str) -> str:
    # child_run_id: "<parent>.<agent>.<call>" (or "<parent[:140]>.<agent[:16]>.h<hash>").
    for prefix in (parent_id + ".", parent_id[:140] + "."):
        if child_id.startswith(prefix):
            return child_id[len(prefix) :].split(".", 1)[0]
    return ""


async def children(svc: Services, run: Run) -> list[SubRunView]:
    """The run's sub-runs, oldest first (of the run's own tenant: a child never has another)."""
    async with svc.repo.session() as db:
        rows = (
            await db.execute(
                select(Run.id, Run.status)
                .where(Run.parent_run_id == run.id, Run.tenant == run.tenant)
                .order_by(Run.created_at, Run.id)
            )
        ).all()
        started = (
            await db.execute(
                select(RunEvent.data)
                .where(RunEvent.run_id == run.id, RunEvent.type == EventType.SUBRUN_STARTED.value)
                .order_by(RunEvent.seq)
            )
        ).scalars()
        named = {str(d.get("subrun_id")): str(d.get("agent") or "") for d in started if d}
    views = [
        SubRunView(
            run_id=r.id,
            agent=named.get(r.id) or _agent_from_id(run.id, r.id),
            status=RunStatus(r.status),
        )
        for r in rows
    ]
    known = {r.id for r in rows}
    unopened = set(named) - known
    if unopened and not RunStatus(run.status).terminal:
        async with svc.repo.session() as db:
            elsewhere = set(
                (await db.execute(select(Run.id).where(Run.id.in_(unopened)))).scalars()
            )
        # Started by the parent, not opened yet (a row of another tenant is never shown).
        views += [
            SubRunView(run_id=i, agent=a, status=RunStatus.QUEUED)
            for i, a in named.items()
            if i not in known and i not in elsewhere
        ]
    return views


async def waiting_on(svc: Services, run: Run, tenant: str) -> list[WaitingOnView]:
    """The sub-runs whose approvals the live run waits on (its status query); [] otherwise."""
    if RunStatus(run.status).terminal:
        return []
    try:
        status = await asyncio.wait_for(run_status(svc.temporal, run.id), STATUS_QUERY_TIMEOUT_S)
    except Exception as exc:  # no worker in time, the run just ended: nothing to show
        log.info("status query of run %s failed: %r", run.id, exc)
        return []
    ids = {w.run_id for w in status.waiting_on}
    if not ids:
        return []
    async with svc.repo.session() as db:
        ours = set(
            (
                await db.execute(select(Run.id).where(Run.id.in_(ids), Run.tenant == tenant))
            ).scalars()
        )
    return [
        WaitingOnView(
            run_id=w.run_id,
            agent=w.agent,
            calls=[PendingCallView(**c.model_dump()) for c in w.calls],
        )
        for w in status.waiting_on
        if w.run_id in ours
    ]
