"""The Postgres store, split by concern; `Repository` is its facade.

engine.py       the engine and its sessions, `insert_once` (INSERT ... ON CONFLICT DO
                NOTHING returning the row), idempotency keys, NotFoundError
events.py       the event log: gapless per-run seqs under the run row's lock, the
                one-statement stream append, read (follow_direct: the old follower, kept for
                the benchmark's comparison)
hub.py          EventHub: one LISTEN connection per process feeds every follower (one read
                per wake-up of a run for all its followers, bounded buffers, catch-up from
                the follower's cursor, reconnect, polling fallback); hub_reads.py its
                queries (many runs' new events in one snapshot)
runs.py         sessions and runs: open_run, forward-only statuses, the session-busy rule
turns.py        messages and llm_calls: record_model_turn, lost attempts, context reads
tool_calls.py   tool call rows: waits, decisions, attempts, results
keys.py         HTTP API keys: hashed secrets, constant-time checks, revokes
tenancy.py      per-tenant reads, idempotent starts, the run listing page, waiting calls
access.py       `TenantAccess`: the Repository's methods over keys.py and tenancy.py
usage.py        the cost ledger's reads: a turn's, run's and session's usage, usage by model,
                day, session or run; a session's budget
repository.py   `Repository`: one transaction per call over the functions above
"""

from __future__ import annotations

from agentrun.protocol.names import NOTIFY_CHANNEL
from agentrun.store.engine import NotFoundError, idempotency_key
from agentrun.store.events import EventIn, event_key
from agentrun.store.hub import EventHub, HubStats
from agentrun.store.keys import KeyInfo
from agentrun.store.repository import Repository
from agentrun.store.runs import (
    RunEndedError,
    RunOwnedError,
    SessionBusyError,
    SessionNotFoundError,
)
from agentrun.store.tenancy import IdempotencyMismatch
from agentrun.store.turns import (
    MODEL_ATTEMPT_STATUSES,
    LlmCallValues,
    estimate_tokens,
    unique_call_ids,
)

__all__ = [
    "MODEL_ATTEMPT_STATUSES",
    "NOTIFY_CHANNEL",
    "EventHub",
    "EventIn",
    "HubStats",
    "IdempotencyMismatch",
    "KeyInfo",
    "LlmCallValues",
    "NotFoundError",
    "Repository",
    "RunEndedError",
    "RunOwnedError",
    "SessionBusyError",
    "SessionNotFoundError",
    "estimate_tokens",
    "event_key",
    "idempotency_key",
    "unique_call_ids",
]
