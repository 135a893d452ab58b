"""GET /v1/usage: the tenant's cost ledger grouped by model, day, session or run (README "Cost
and budgets"); `cost_usd` is an exact decimal string, null when no call of the group was
priced, and `unpriced_calls` counts the calls it leaves out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request

from agentrun.api.auth import KeyInfo, require
from agentrun.api.lookups import owned_session, services
from agentrun.protocol.http import UsagePage, UsageRowView
from agentrun.protocol.statuses import Scope
from agentrun.store.usage import UsageRow, total_of

router = APIRouter(prefix="/v1", tags=["usage"])


def _view(row: UsageRow) -> UsageRowView:
    return UsageRowView(**{k: getattr(row, k) for k in UsageRowView.model_fields})


@router.get("/usage", response_model=UsagePage)
async def usage(
    request: Request,
    key: Annotated[KeyInfo, Depends(require(Scope.READ))],
    by: Literal["model", "day", "session", "run"] = "model",
    session_id: Annotated[str | None, Query(max_length=200)] = None,
    since: datetime | None = None,
) -> UsagePage:
    svc = services(request)
    if session_id is not None:
        await owned_session(svc, session_id, key.tenant)  # 404 for another tenant's
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    rows = await svc.repo.usage_by(by, session_id=session_id, since=since, tenant=key.tenant)
    return UsagePage(
        by=by,
        session_id=session_id,
        since=since,
        rows=[_view(r) for r in rows],
        total=_view(total_of(rows)),
    )
