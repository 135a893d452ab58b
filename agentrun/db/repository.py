"""Moved: the store lives in agentrun.store (split by concern). This module re-exports its
public names so that existing imports keep working."""

from __future__ import annotations

from agentrun.store import (
    MODEL_ATTEMPT_STATUSES,
    NOTIFY_CHANNEL,
    EventIn,
    LlmCallValues,
    NotFoundError,
    Repository,
    RunEndedError,
    RunOwnedError,
    SessionBusyError,
    estimate_tokens,
    event_key,
    idempotency_key,
    sha256_text,
    unique_call_ids,
)

__all__ = [
    "MODEL_ATTEMPT_STATUSES",
    "NOTIFY_CHANNEL",
    "EventIn",
    "LlmCallValues",
    "NotFoundError",
    "Repository",
    "RunEndedError",
    "RunOwnedError",
    "SessionBusyError",
    "estimate_tokens",
    "event_key",
    "idempotency_key",
    "sha256_text",
    "unique_call_ids",
]
