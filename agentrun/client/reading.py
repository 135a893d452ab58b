"""Reading runs: a run's events as typed protocol events (from the store's event log), and the
list of runs (from Temporal's visibility, filtered by the search attributes)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel
from temporalio.client import Client

from agentrun.client.errors import RunNotFound
from agentrun.protocol.events import Event, UnknownEvent, parse_event
from agentrun.protocol.names import (
    SA_MODEL,
    SA_RUN_STATUS,
    SA_SESSION_ID,
    SA_WAITING_APPROVAL,
    WORKFLOW_NAME,
)
from agentrun.protocol.statuses import RunStatus

if TYPE_CHECKING:
    from agentrun.store import Repository

AnyEvent = Event | UnknownEvent


async def follow(
    repo: Repository,
    run_id: str,
    after_seq: int = 0,
    *,
    poll_interval: float = 1.0,
    until_terminal: bool = True,
) -> AsyncGenerator[AnyEvent, None]:
    """Every event of the run after `after_seq` as a typed protocol event, live, until the run
    ends (or for ever with until_terminal=False). `seq` is gapless and in commit order: resuming
    from the last seq seen loses and repeats nothing."""
    events = repo.follow_events(
        run_id, after_seq, poll_interval=poll_interval, until_terminal=until_terminal
    )
    try:
        async for row in events:
            yield parse_event(row.run_id, row.seq, row.type, row.data, row.created_at)
    except LookupError:
        raise RunNotFound(run_id) from None
    finally:
        await events.aclose()  # type: ignore[attr-defined]


class RunSummary(BaseModel):
    """One run as Temporal's visibility lists it (from the search attributes)."""

    run_id: str
    status: str | None = None
    session_id: str | None = None
    model: str | None = None
    waiting_approval: bool | None = None
    started: datetime | None = None
    workflow_status: str | None = None


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "").replace("'", "") + "'"


def list_query(
    *,
    status: RunStatus | str | None = None,
    session_id: str | None = None,
    waiting_approval: bool = False,
) -> str:
    """The visibility query for agentrun runs with these filters (the one place it is built).
    An unknown status raises ValueError."""
    # An execution that continued-as-new is not a run of its own (README Long runs).
    clauses = [
        f"WorkflowType = {_literal(WORKFLOW_NAME)}",
        "ExecutionStatus != 'ContinuedAsNew'",
    ]
    if status is not None:
        clauses.append(f"{SA_RUN_STATUS.name} = {_literal(RunStatus(status).value)}")
    if session_id:
        clauses.append(f"{SA_SESSION_ID.name} = {_literal(session_id)}")
    if waiting_approval:
        clauses.append(f"{SA_WAITING_APPROVAL.name} = true")
    return " AND ".join(clauses)


async def list_runs(
    client: Client,
    *,
    status: RunStatus | str | None = None,
    session_id: str | None = None,
    waiting_approval: bool = False,
    limit: int = 50,
) -> list[RunSummary]:
    """Runs, newest first, filtered by status, session and waiting-for-approval."""
    query = list_query(status=status, session_id=session_id, waiting_approval=waiting_approval)
    rows: list[RunSummary] = []
    async for wf in client.list_workflows(query, limit=limit):
        sa = wf.typed_search_attributes
        rows.append(
            RunSummary(
                run_id=wf.id,
                status=sa.get(SA_RUN_STATUS),
                session_id=sa.get(SA_SESSION_ID),
                model=sa.get(SA_MODEL),
                waiting_approval=sa.get(SA_WAITING_APPROVAL),
                started=wf.start_time,
                workflow_status=wf.status.name if wf.status else None,
            )
        )
    return rows
