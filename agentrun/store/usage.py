"""The cost ledger's reads and the session budget: a turn's usage (every attempt), a run's and
a session's rollups, usage grouped by model, day or session, and a session's budget.

The ledger is llm_calls (one row per model attempt, with its cost); runs keep the rollup of
their rows, written in the same transaction as each row (agentrun.store.turns.usage_rollup),
so a run's or a session's figures are a read of runs, not a scan of llm_calls. Sums are exact:
cost is NUMERIC in PostgreSQL and Decimal here. `UsageAccess` is the Repository's part.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Date, cast, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agentrun.contracts import SessionBudget, Usage
from agentrun.db.models import DEFAULT_TENANT, LlmCall, LlmCallStatus, Run, Session
from agentrun.store.engine import Engine, NotFoundError, insert_once
from agentrun.store.keys import check_name

GroupBy = Literal["model", "day", "session", "run"]
GROUPS: tuple[GroupBy, ...] = ("model", "day", "session", "run")
MAX_SESSION_BUDGET_USD = Decimal(10**9)
MAX_SESSION_TOKENS = 10**15
MAX_BUDGET_PLACES = 18


@dataclass
class UsageRow:
    """One group of `usage_by`: its key (a model, a day, a session or a run id) and figures."""

    key: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    llm_calls: int = 0
    cost_usd: Decimal | None = None
    unpriced_calls: int = 0
    unpriced_models: list[str] = field(default_factory=list)
    unmetered_calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def total_of(rows: Sequence[UsageRow]) -> UsageRow:
    """The rows added up (exactly; cost None while no row was priced)."""
    total = UsageRow(key="total")
    for r in rows:
        total.llm_calls += r.llm_calls
        total.prompt_tokens += r.prompt_tokens
        total.cached_tokens += r.cached_tokens
        total.completion_tokens += r.completion_tokens
        total.reasoning_tokens += r.reasoning_tokens
        total.unpriced_calls += r.unpriced_calls
        total.unmetered_calls += r.unmetered_calls
        if r.cost_usd is not None:
            total.cost_usd = (total.cost_usd or Decimal(0)) + r.cost_usd
        total.unpriced_models = sorted({*total.unpriced_models, *r.unpriced_models})
    return total


def _tokens_reported() -> Any:
    return (LlmCall.prompt_tokens.is_not(None)) | (LlmCall.completion_tokens.is_not(None))


def _ledger_sums() -> list[Any]:
    unpriced = _tokens_reported() & LlmCall.cost_usd.is_(None)
    return [
        func.coalesce(func.sum(LlmCall.prompt_tokens), 0),
        func.coalesce(func.sum(LlmCall.completion_tokens), 0),
        func.coalesce(func.sum(LlmCall.cached_tokens), 0),
        func.coalesce(func.sum(LlmCall.reasoning_tokens), 0),
        func.count(),
        func.sum(LlmCall.cost_usd),
        func.count().filter(unpriced),
        func.array_agg(func.distinct(LlmCall.model)).filter(unpriced),
        func.count().filter(~_tokens_reported() & (LlmCall.status == LlmCallStatus.OK.value)),
    ]


def _usage_of_row(row: Sequence[Any], **counts: int) -> Usage:
    return Usage(
        prompt_tokens=int(row[0]),
        completion_tokens=int(row[1]),
        cached_tokens=int(row[2]),
        reasoning_tokens=int(row[3]),
        cost_usd=row[5],
        unpriced_calls=int(row[6]),
        unmetered_calls=int(row[8]),
        **counts,
    )


async def turn_usage(db: AsyncSession, run_id: str, turn: int) -> Usage:
    """What every attempt of a turn used as the endpoint reported it (a retried turn counts
    its failed attempts' usage too), as one model call and one turn."""
    row = (
        await db.execute(
            select(*_ledger_sums()).where(LlmCall.run_id == run_id, LlmCall.turn == turn)
        )
    ).one()
    return _usage_of_row(row, llm_calls=1, turns=1)


def run_usage(run: Run) -> Usage:
    """A run's rollup as a Usage."""
    return Usage(
        prompt_tokens=run.prompt_tokens,
        completion_tokens=run.completion_tokens,
        llm_calls=run.llm_call_count,
        tool_calls=run.tool_call_count,
        turns=run.turns,
        cached_tokens=run.cached_tokens,
        reasoning_tokens=run.reasoning_tokens,
        cost_usd=run.cost_usd,
        unpriced_calls=run.unpriced_calls,
        unmetered_calls=run.unmetered_calls,
    )


async def session_usage(db: AsyncSession, session_id: str, *, but: str | None = None) -> Usage:
    """The sum of the session's runs' rollups (leaving out run `but`)."""
    stmt = select(
        func.coalesce(func.sum(Run.prompt_tokens), 0),
        func.coalesce(func.sum(Run.completion_tokens), 0),
        func.coalesce(func.sum(Run.cached_tokens), 0),
        func.coalesce(func.sum(Run.reasoning_tokens), 0),
        func.coalesce(func.sum(Run.llm_call_count), 0),
        func.sum(Run.cost_usd),
        func.coalesce(func.sum(Run.unpriced_calls), 0),
        func.coalesce(func.sum(Run.tool_call_count), 0),
        func.coalesce(func.sum(Run.unmetered_calls), 0),
        func.coalesce(func.sum(Run.turns), 0),
    ).where(Run.session_id == session_id)
    if but is not None:
        stmt = stmt.where(Run.id != but)
    row = (await db.execute(stmt)).one()
    # Laid out as _ledger_sums: index 8 is the unmetered count.
    return _usage_of_row(row, llm_calls=int(row[4]), tool_calls=int(row[7]), turns=int(row[9]))


async def session_budget(
    db: AsyncSession, session_id: str, run_id: str, tenant: str = DEFAULT_TENANT
) -> SessionBudget | None:
    """The session's budget and what its other runs used, or None when it has no budget (or
    is another tenant's: the open refuses that run, and says nothing of the session)."""
    session = await db.get(Session, session_id)
    if session is None or session.tenant != tenant:
        return None
    if session.max_cost_usd is None and session.max_total_tokens is None:
        return None
    return SessionBudget(
        max_cost_usd=session.max_cost_usd,
        max_total_tokens=session.max_total_tokens,
        used_before=await session_usage(db, session_id, but=run_id),
    )


def check_session_budget(max_cost_usd: Decimal | None, max_total_tokens: int | None) -> None:
    """ValueError unless the limits are sane (None: that limit is cleared)."""
    if max_cost_usd is not None:
        if not max_cost_usd.is_finite() or max_cost_usd <= 0:
            raise ValueError(f"max_cost_usd must be more than 0, not {max_cost_usd}")
        if max_cost_usd > MAX_SESSION_BUDGET_USD:
            raise ValueError(f"max_cost_usd may be at most {MAX_SESSION_BUDGET_USD}")
        exponent = max_cost_usd.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -MAX_BUDGET_PLACES:
            # PostgreSQL's NUMERIC refuses far more places; no price is that fine.
            raise ValueError(f"max_cost_usd may have at most {MAX_BUDGET_PLACES} decimal places")
    if max_total_tokens is not None and not 0 < max_total_tokens <= MAX_SESSION_TOKENS:
        raise ValueError(
            f"max_total_tokens must be from 1 to {MAX_SESSION_TOKENS}, not {max_total_tokens}"
        )


async def set_session_budget(
    db: AsyncSession,
    session_id: str,
    max_cost_usd: Decimal | None,
    max_total_tokens: int | None,
    tenant: str = DEFAULT_TENANT,
    only: Collection[str] | None = None,
) -> Session:
    """Store the session's budget (None clears a limit), making the session when it does not
    exist yet, so that a budget can be set before its first run. The next run of the session
    is checked against it when it opens; a run already going keeps the budget it opened with.
    `only`: the limits to set (the others keep their value, in the same UPDATE, so two callers
    that set different limits at once both take effect); None: both. NotFoundError for
    another tenant's session."""
    check_session_budget(max_cost_usd, max_total_tokens)
    check_name("tenant", tenant)
    session, _ = await insert_once(
        db, Session, {"id": session_id, "metadata_": {}, "tenant": tenant}, Session.id
    )
    if session.tenant != tenant:
        raise NotFoundError(f"no session {session_id!r} for this tenant")
    await db.execute(
        update(Session)
        .where(Session.id == session_id)
        .values(
            **{
                name: value
                for name, value in (
                    ("max_cost_usd", max_cost_usd),
                    ("max_total_tokens", max_total_tokens),
                )
                if only is None or name in only
            }
        )
    )
    await db.refresh(session)
    return session


async def usage_by(
    db: AsyncSession,
    by: GroupBy,
    *,
    session_id: str | None = None,
    since: datetime | None = None,
    tenant: str | None = None,
) -> list[UsageRow]:
    """The ledger grouped by model, day (UTC), session or run, newest day first or the
    costliest first; filtered to a session, to calls made at or after `since`, to a tenant."""
    key: Any = {
        "model": LlmCall.model,
        "day": cast(func.timezone("UTC", LlmCall.created_at), Date),
        "session": Run.session_id,
        "run": LlmCall.run_id,
    }[by]
    stmt = select(key, *_ledger_sums()).join(Run, Run.id == LlmCall.run_id).group_by(key)
    if session_id is not None:
        stmt = stmt.where(Run.session_id == session_id)
    if since is not None:
        stmt = stmt.where(LlmCall.created_at >= since)
    if tenant is not None:
        stmt = stmt.where(Run.tenant == tenant)
    rows = [
        UsageRow(
            key=str(r[0]),
            prompt_tokens=int(r[1]),
            completion_tokens=int(r[2]),
            cached_tokens=int(r[3]),
            reasoning_tokens=int(r[4]),
            llm_calls=int(r[5]),
            cost_usd=r[6],
            unpriced_calls=int(r[7]),
            unpriced_models=sorted(r[8] or []),
            unmetered_calls=int(r[9]),
        )
        for r in (await db.execute(stmt)).all()
    ]
    if by == "day":
        return sorted(rows, key=lambda r: r.key, reverse=True)
    return sorted(rows, key=lambda r: (-(r.cost_usd or 0), -r.total_tokens, r.key))


class UsageAccess(Engine):
    """The Repository's ledger methods: one read-only session or transaction each."""

    async def turn_usage(self, run_id: str, turn: int) -> Usage:
        async with self.session() as db:
            return await turn_usage(db, run_id, turn)

    async def session_usage(self, session_id: str) -> Usage:
        async with self.session() as db:
            return await session_usage(db, session_id)

    async def session_budget(
        self, session_id: str, run_id: str, tenant: str = DEFAULT_TENANT
    ) -> SessionBudget | None:
        async with self.session() as db:
            return await session_budget(db, session_id, run_id, tenant)

    async def set_session_budget(
        self,
        session_id: str,
        max_cost_usd: Decimal | None,
        max_total_tokens: int | None,
        tenant: str = DEFAULT_TENANT,
        only: Collection[str] | None = None,
    ) -> Session:
        async with self.transaction() as db:
            return await set_session_budget(
                db, session_id, max_cost_usd, max_total_tokens, tenant, only
            )

    async def usage_by(
        self,
        by: GroupBy,
        *,
        session_id: str | None = None,
        since: datetime | None = None,
        tenant: str | None = None,
    ) -> list[UsageRow]:
        async with self.session() as db:
            return await usage_by(db, by, session_id=session_id, since=since, tenant=tenant)
