"""Database errors that no retry can fix end an activity at once.

PostgreSQL refuses some values for good (a NUL in text, a string too long for its column, a
number out of range). Retrying such a write only repeats the work before it (a tool run, a
model call) until the schedule-to-close bound, so data errors become non-retryable failures.
Their message is the server's primary message without the value it quotes: the full error text
can carry bound values (tool output, a prompt) into Temporal's history and logs.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
import sqlalchemy.exc
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

__all__ = ["NonRetryableDataErrors", "as_non_retryable"]


def as_non_retryable(exc: BaseException) -> ApplicationError | None:
    """The failure to raise instead of `exc`, or None when `exc` is not a data error."""
    orig: BaseException | None = exc
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        orig = exc.orig
    if isinstance(orig, psycopg.errors.DataError):
        state = f", SQLSTATE {orig.sqlstate}" if orig.sqlstate else ""
        return ApplicationError(
            f"the database refused the data ({type(orig).__name__}{state}): "
            f"{_without_values(orig.diag.message_primary or str(orig))}",
            type="DataError",
            non_retryable=True,
        )
    if isinstance(exc, sqlalchemy.exc.DataError):
        return ApplicationError(
            "the database refused the data", type="DataError", non_retryable=True
        )
    return None


def _without_values(message: str) -> str:
    """The message without the value it complains about: PostgreSQL puts it after a colon
    (`invalid input syntax for type integer: "..."`) or in quotes."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    head = first.split(": ", 1)[0]
    return re.sub(r'"[^"]*"', '"..."', head)[:200]


class _Inbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        except Exception as exc:
            failure = as_non_retryable(exc)
            if failure is None:
                raise
            # `from None`: the cause chain would be serialised into the failure, with the
            # original message and its parameters.
            raise failure from None


class NonRetryableDataErrors(Interceptor):
    """Worker interceptor: every activity (local ones too) fails a data error without retry."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next)
