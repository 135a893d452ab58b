"""What the HTTP API reads and writes per tenant: idempotent starts, tenant-scoped reads of runs
and sessions, a page of runs, the calls that wait.

Another tenant's run or session is a NotFoundError with the very message a missing one gets, so
a caller cannot tell them apart. The run listing pages by keyset (created_at, id), newest first:
a run started while a client pages does not shift or repeat the rows it has not read yet.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, exists, func, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from agentrun.db.models import (
    TERMINAL_RUN_STATUSES,
    ApiIdempotency,
    Message,
    Run,
    RunEvent,
    RunStatus,
    Session,
    ToolCall,
    ToolCallStatus,
)
from agentrun.protocol.events import EventType
from agentrun.store.engine import NotFoundError
from agentrun.store.events import event_key
from agentrun.store.keys import check_name

MAX_PAGE = 200
MAX_IDEMPOTENCY_KEY = 200
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Printable ASCII without spaces: what an HTTP header value carries safely.
_IDEMPOTENCY_KEY_RE = re.compile(rf"^[\x21-\x7e]{{1,{MAX_IDEMPOTENCY_KEY}}}$")
_TERMINAL = [s.value for s in TERMINAL_RUN_STATUSES]


class IdempotencyMismatch(ValueError):
    """An Idempotency-Key used again with a different request body."""

    def __init__(self, key: str, run_id: str) -> None:
        super().__init__(
            f"the Idempotency-Key {key!r} was used with a different request; use a new key for "
            "a new request"
        )
        self.key = key
        self.run_id = run_id


def _run_not_found(run_id: str) -> NotFoundError:
    return NotFoundError(f"no run with id {run_id!r}")


def _session_not_found(session_id: str) -> NotFoundError:
    return NotFoundError(f"no session with id {session_id!r}")


# -- idempotent starts --------------------------------------------------------------------------


async def claim_idempotency_key(
    db: AsyncSession, tenant: str, key: str, request_sha256: str, run_id: str
) -> tuple[str, bool]:
    """Claim `key` of `tenant` for a start of `run_id` with a body of hash `request_sha256`.
    Returns (the key's run id, True when this call claimed it); a key already claimed with the
    same hash returns its run id and False; with another hash, IdempotencyMismatch."""
    check_name("tenant", tenant)
    if not isinstance(key, str) or not _IDEMPOTENCY_KEY_RE.match(key):
        raise ValueError(
            f"the Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII "
            "characters without spaces"
        )
    if not _SHA256_RE.match(request_sha256):
        raise ValueError("request_sha256 must be 64 lowercase hex digits (a SHA-256)")
    claimed = (
        await db.execute(
            insert(ApiIdempotency)
            .values(tenant=tenant, key=key, request_sha256=request_sha256, run_id=run_id)
            .on_conflict_do_nothing(index_elements=["tenant", "key"])
            .returning(ApiIdempotency.run_id)
        )
    ).scalar_one_or_none()
    if claimed is not None:
        return claimed, True
    row = (
        await db.execute(
            select(ApiIdempotency).where(ApiIdempotency.tenant == tenant, ApiIdempotency.key == key)
        )
    ).scalar_one()
    if row.request_sha256 != request_sha256:
        raise IdempotencyMismatch(key, row.run_id)
    return row.run_id, False


async def release_idempotency_key(db: AsyncSession, tenant: str, key: str, run_id: str) -> bool:
    """Give up a claim whose start failed before anything started (so a retry may start it);
    only the claim for `run_id` is removed. Returns whether one was."""
    result = await db.execute(
        delete(ApiIdempotency).where(
            ApiIdempotency.tenant == tenant,
            ApiIdempotency.key == key,
            ApiIdempotency.run_id == run_id,
        )
    )
    return bool(getattr(result, "rowcount", 0))


# -- tenant-scoped reads ------------------------------------------------------------------------


async def get_run(db: AsyncSession, run_id: str, tenant: str | None = None) -> Run:
    """The run; NotFoundError when there is none or (given `tenant`) it is another tenant's."""
    run = await db.get(Run, run_id)
    if run is None or (tenant is not None and run.tenant != tenant):
        raise _run_not_found(run_id)
    return run


async def get_session(db: AsyncSession, session_id: str, tenant: str | None = None) -> Session:
    """The session row; NotFoundError as get_run."""
    session = await db.get(Session, session_id)
    if session is None or (tenant is not None and session.tenant != tenant):
        raise _session_not_found(session_id)
    return session


def encode_cursor(row: Run | Session) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) of a cursor from encode_cursor; ValueError for anything else."""
    malformed = ValueError("malformed cursor: pass back the next_cursor of a previous page")
    if not isinstance(cursor, str) or not 0 < len(cursor) <= 400:
        raise malformed
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, sep, run_id = raw.partition("|")
        created_at = datetime.fromisoformat(stamp)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise malformed from None
    if not sep or not run_id or created_at.tzinfo is None:
        raise malformed
    return created_at, run_id


def _check_limit(limit: int) -> None:
    """A page's size: ValueError outside 1..MAX_PAGE (or not a whole number)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_PAGE}, not {limit!r}")


def _waiting_approval() -> object:
    """A run that waits for a person: WAITING_APPROVAL, or not ended with a call undecided."""
    undecided = exists().where(
        ToolCall.run_id == Run.id,
        ToolCall.status == ToolCallStatus.PENDING_APPROVAL.value,
        ToolCall.decision.is_(None),
    )
    return or_(
        Run.status == RunStatus.WAITING_APPROVAL.value,
        and_(Run.status.not_in(_TERMINAL), undecided),
    )


async def list_runs_page(
    db: AsyncSession,
    tenant: str,
    *,
    session_id: str | None = None,
    status: RunStatus | None = None,
    waiting_approval: bool = False,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Run], str | None]:
    """A page of the tenant's runs, newest first (created_at, then id), and the cursor of the
    next page (None on the last). ValueError for a limit outside 1..200 or a malformed cursor."""
    _check_limit(limit)
    stmt = select(Run).where(Run.tenant == tenant)
    if session_id is not None:
        stmt = stmt.where(Run.session_id == session_id)
    if status is not None:
        stmt = stmt.where(Run.status == RunStatus(status).value)
    if waiting_approval:
        stmt = stmt.where(_waiting_approval())  # type: ignore[arg-type]
    if cursor is not None:
        created_at, run_id = decode_cursor(cursor)
        stmt = stmt.where(tuple_(Run.created_at, Run.id) < tuple_(created_at, run_id))
    stmt = stmt.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit + 1)
    rows = list((await db.execute(stmt)).scalars())
    if len(rows) <= limit:
        return rows, None
    page = rows[:limit]
    return page, encode_cursor(page[-1])


async def pending_tool_calls(db: AsyncSession, run_id: str) -> list[ToolCall]:
    """The calls of a run that has not ended that wait: for a decision (pending_approval, not
    decided) or for a client-side result (pending, its tool.result_requested recorded, no
    result yet); in the order they were made."""
    requested = exists().where(
        RunEvent.run_id == ToolCall.run_id,
        RunEvent.idempotency_key
        == event_key(EventType.TOOL_RESULT_REQUESTED, "")  # prefix + the call's id
        + ToolCall.tool_call_id,
    )
    stmt = (
        select(ToolCall)
        .join(Run, Run.id == ToolCall.run_id)
        .where(
            ToolCall.run_id == run_id,
            Run.status.not_in(_TERMINAL),
            or_(
                and_(
                    ToolCall.status == ToolCallStatus.PENDING_APPROVAL.value,
                    ToolCall.decision.is_(None),
                ),
                and_(ToolCall.status == ToolCallStatus.PENDING.value, requested),
            ),
        )
        .order_by(ToolCall.turn, ToolCall.id)
    )
    return list((await db.execute(stmt)).scalars())


@dataclass(frozen=True)
class SessionSummary:
    """A session as a list shows it: its first user message as a title, its active run."""

    id: str
    created_at: datetime
    active_run_id: str | None
    title: str | None


async def list_sessions_page(
    db: AsyncSession, tenant: str, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[SessionSummary], str | None]:
    """A page of the tenant's sessions, newest first, and the next page's cursor (None on the
    last); ValueError as list_runs_page."""
    _check_limit(limit)
    first_prompt = (
        select(func.left(Message.content, 120))
        .where(Message.session_id == Session.id, Message.role == "user")
        .order_by(Message.id)
        .limit(1)
        .correlate(Session)
        .scalar_subquery()
    )
    stmt = select(Session, first_prompt).where(
        Session.tenant == tenant, Session.deleted_at.is_(None)
    )
    if cursor is not None:
        created_at, session_id = decode_cursor(cursor)
        stmt = stmt.where(tuple_(Session.created_at, Session.id) < tuple_(created_at, session_id))
    stmt = stmt.order_by(Session.created_at.desc(), Session.id.desc()).limit(limit + 1)
    rows = list((await db.execute(stmt)).all())
    page = [SessionSummary(s.id, s.created_at, s.active_run_id, title) for s, title in rows[:limit]]
    if len(rows) <= limit:
        return page, None
    return page, encode_cursor(rows[limit - 1][0])
