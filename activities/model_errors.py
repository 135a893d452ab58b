"""What went wrong in a model turn, and whether another attempt can help.

A failed attempt is classified once (`classify`): 408/409/429/5xx, dropped connections, truncated
or malformed streams and stalls retry (after Retry-After); 400/401/403/404/422 and a context that
is too long do not. Database trouble is told apart too: a lost connection is waited out, a value
the database refuses is not.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import time
from dataclasses import dataclass
from typing import Any

import openai
import psycopg
import sqlalchemy.exc

NON_RETRYABLE_STATUSES = frozenset({400, 401, 403, 404, 422})
RETRYABLE_STATUSES = frozenset({408, 409, 429})
MAX_RETRY_AFTER_S = 600.0


class IncompleteStreamError(Exception):
    """The stream ended without a finish reason: a truncated response."""


class StallError(Exception):
    """No chunk within the first-token timeout, or between two chunks within the stall one."""


class DatabaseUnavailableError(Exception):
    """The database stayed unreachable for the worker's whole AGENTRUN_DB_RETRY_S."""


@dataclass(frozen=True)
class ModelFailure:
    """A failed attempt as the event log, llm_calls and Temporal see it."""

    message: str
    error_type: str
    retryable: bool = True
    http_status: int | None = None
    retry_after_s: float | None = None


def classify(exc: Exception, endpoint: str | None = None) -> ModelFailure:
    """What a failed model attempt was, and whether a retry can help (before the budget).
    `endpoint` (the worker's OPENAI_BASE_URL without secrets) is named in the message, so a
    person reading the run's error knows which server failed."""
    at = f" at {endpoint}" if endpoint else ""
    if isinstance(exc, StallError):
        return ModelFailure(f"{exc} (model endpoint{at})", "ModelTimeout")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = f"model endpoint{at} answered HTTP {status}: {_provider_message(exc)}"
        retryable, delay = False, None
        if status in NON_RETRYABLE_STATUSES or _is_context_length(exc):
            retryable = False
        elif status in RETRYABLE_STATUSES or status >= 500:
            retryable, delay = True, retry_after_seconds(exc.response.headers)
        return ModelFailure(message, f"ModelHTTP{status}", retryable, status, delay)
    if isinstance(exc, openai.APITimeoutError):
        return ModelFailure(f"model stream{at} stalled or timed out: {exc}", "ModelTimeout")
    if isinstance(exc, openai.APIConnectionError):
        return ModelFailure(
            f"connection to the model endpoint{at} failed: {exc.__cause__ or exc}",
            "ModelConnection",
        )
    if isinstance(exc, IncompleteStreamError | json.JSONDecodeError | openai.APIError):
        return ModelFailure(
            f"the model stream{at} was incomplete or malformed: {exc}", "ModelStream"
        )
    return ModelFailure(f"model call{at} failed: {type(exc).__name__}: {exc}", "ModelError")


def is_transient_db_error(exc: BaseException) -> bool:
    """A lost or refused connection, a server shutting down: worth waiting out. Data errors
    (a value the database refuses) and programming errors are not."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig if exc.orig is not None else exc
        if isinstance(exc, sqlalchemy.exc.DBAPIError):
            return isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError)
    return isinstance(
        exc,
        psycopg.OperationalError
        | psycopg.InterfaceError
        | sqlalchemy.exc.TimeoutError
        | ConnectionError,
    )


def db_error_text(exc: BaseException) -> str:
    # The driver's own message, first line only: SQLAlchemy's text carries the statement and
    # its bound parameters (conversation text), which must not reach Temporal or the logs.
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [""])[0]
    return f"{type(orig).__name__}: {first[:300]}"


def retry_after_seconds(headers: Any) -> float | None:
    """Retry-After in seconds, from retry-after-ms or Retry-After (seconds or an HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        with contextlib.suppress(ValueError):
            return max(0.0, float(ms) / 1000)
    return retry_after_value(headers.get("retry-after"))


def retry_after_value(value: str | None) -> float | None:
    """A Retry-After header's value in seconds (delta-seconds or an HTTP date); None when it
    is absent or malformed. The model's answers and the webhook receivers' both go through it."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _provider_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return exc.message


def _is_context_length(exc: openai.APIStatusError) -> bool:
    body = exc.body if isinstance(exc.body, dict) else {}
    err = body.get("error", body) if isinstance(body, dict) else {}
    code = err.get("code") if isinstance(err, dict) else None
    text = _provider_message(exc).lower()
    return code == "context_length_exceeded" or "context length" in text or "context_length" in text
