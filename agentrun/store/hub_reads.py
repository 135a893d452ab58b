"""The event hub's reads (agentrun.store.hub): many runs' positions and their new events in one
query, from one snapshot; and the positions alone, for the poll fallback."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import String

from agentrun.db.models import RunEvent
from agentrun.protocol.statuses import TERMINAL_RUN_STATUSES

_TERMINAL = frozenset(s.value for s in TERMINAL_RUN_STATUSES)

# Every event up to a run's last_event_seq was committed with the run row, so in one snapshot
# an unfilled page reaches it. A run that does not exist has no row.
_READ = text(
    """
    SELECT w.run_id, r.status, r.last_event_seq, e.id, e.seq, e.type, e.data,
           e.idempotency_key, e.created_at
    FROM unnest(CAST(:ids AS text[]), CAST(:afters AS bigint[])) AS w(run_id, after)
    JOIN runs r ON r.id = w.run_id
    LEFT JOIN LATERAL (
        SELECT id, seq, type, data, idempotency_key, created_at FROM run_events
        WHERE run_id = w.run_id AND seq > w.after ORDER BY seq LIMIT :limit
    ) e ON true
    ORDER BY w.run_id, e.seq
    """
)
_POSITIONS = text("SELECT id, status, last_event_seq FROM runs WHERE id = ANY(:ids)").bindparams(
    bindparam("ids", type_=ARRAY(String))
)


@dataclass(frozen=True)
class Position:
    """Where a run is: whether it exists, has ended, and the seq of its last event."""

    exists: bool = False
    terminal: bool = False
    last_seq: int = 0

    def merged(self, other: Position) -> Position:
        """Positions only move forward (a terminal status is never left)."""
        return Position(
            self.exists or other.exists,
            self.terminal or other.terminal,
            max(self.last_seq, other.last_seq),
        )


Page = tuple[Position, list[RunEvent]]


async def read_runs(conn: AsyncConnection, cursors: dict[str, int], limit: int) -> dict[str, Page]:
    """Each run's position and up to `limit` of its events after its cursor, in seq order;
    a run that does not exist is left out."""
    params = {"ids": list(cursors), "afters": list(cursors.values()), "limit": limit}
    rows = (await conn.execute(_READ, params)).all()
    out: dict[str, Page] = {}
    for r in rows:
        got = out.get(r.run_id)
        if got is None:
            position = Position(True, r.status in _TERMINAL, int(r.last_event_seq))
            got = out[r.run_id] = (position, [])
        if r.seq is not None:
            got[1].append(
                RunEvent(
                    id=r.id,
                    run_id=r.run_id,
                    seq=r.seq,
                    type=r.type,
                    data=r.data,
                    idempotency_key=r.idempotency_key,
                    created_at=r.created_at,
                )
            )
    return out


async def read_positions(conn: AsyncConnection, run_ids: Iterable[str]) -> dict[str, Position]:
    rows = (await conn.execute(_POSITIONS, {"ids": list(run_ids)})).all()
    return {run_id: Position(True, status in _TERMINAL, int(seq)) for run_id, status, seq in rows}
