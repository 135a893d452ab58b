"""What the routes share: the app's Temporal client, store and settings, and the tenant-scoped
lookups. Another tenant's run or session is answered exactly as a missing one (404, same
words), so a key cannot learn that it exists."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request
from temporalio.client import Client, WorkflowExecutionDescription

from agentrun.api.problems import not_found
from agentrun.client import RunNotFound, describe_run
from agentrun.contracts.run import ID_PATTERN
from agentrun.db.models import DEFAULT_TENANT, Run
from agentrun.db.models import Session as SessionRow
from agentrun.protocol.http import Links
from agentrun.protocol.names import SA_TENANT, WORKFLOW_NAME

if TYPE_CHECKING:
    from agentrun.settings import Settings
    from agentrun.store import Repository


_ID = re.compile(ID_PATTERN)


@dataclass
class Services:
    settings: Settings
    repo: Repository
    temporal: Client


def services(request: Request) -> Services:
    state = request.app.state
    return Services(state.settings, state.repo, state.temporal)


def links(run_id: str) -> Links:
    base = f"/v1/runs/{run_id}"
    return Links(self=base, events=f"{base}/events", cancel=f"{base}/cancel")


async def owned_run(svc: Services, run_id: str, tenant: str) -> Run | None:
    """The tenant's run; None for one of its runs that was started but is not opened yet (no
    worker has written its record: Temporal's AgentTenant attribute says whose it is). A
    missing run or another tenant's raises the same 404."""
    if not _ID.match(run_id):
        raise not_found("run", run_id)
    run = await svc.repo.find_run(run_id)
    if run is not None:
        if run.tenant != tenant:
            raise not_found("run", run_id)
        return run
    desc = await starting_run(svc, run_id)
    owner = desc.typed_search_attributes.get(SA_TENANT) or DEFAULT_TENANT
    if owner != tenant:
        raise not_found("run", run_id)
    # The record may have been written since the first read.
    return await svc.repo.find_run(run_id)


async def starting_run(svc: Services, run_id: str) -> WorkflowExecutionDescription:
    """The workflow of a run that has no record yet; 404 unless it is an agentrun run (other
    workflows share the namespace: webhook deliveries, an operator's own)."""
    try:
        desc = await describe_run(svc.temporal, run_id)
    except RunNotFound:
        raise not_found("run", run_id) from None
    if desc.workflow_type != WORKFLOW_NAME:
        raise not_found("run", run_id)
    return desc


async def owned_session(svc: Services, session_id: str, tenant: str) -> SessionRow:
    row = None
    if _ID.match(session_id):
        async with svc.repo.session() as db:
            row = await db.get(SessionRow, session_id)
    if row is None or row.tenant != tenant:
        raise not_found("session", session_id)
    return row


async def session_tenant(svc: Services, session_id: str) -> str | None:
    """The tenant of an existing session, or None when there is no such session."""
    async with svc.repo.session() as db:
        row = await db.get(SessionRow, session_id)
    return None if row is None else row.tenant
