"""Every error the API answers is an RFC 9457 problem document (application/problem+json):
`type`, `title`, `status`, a `detail` that says what to fix, and members such as `run_id` or
`active_run_id` where they help. One exception (`ApiProblem`) and the handlers that turn
FastAPI's and Starlette's own errors into the same shape."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError

from agentrun.protocol.http import PROBLEM_MEDIA_TYPE

log = logging.getLogger("agentrun.api")

# Problem types are URNs: stable names to match on, not pages to fetch (RFC 9457 3.1.1).
TYPE_BASE = "urn:agentrun:problem:"


def problem_response(
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + kind if kind else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


class ApiProblem(Exception):
    """Raised by a route: answered as a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind
        self.headers = headers
        self.extra = extra

    def response(self) -> JSONResponse:
        return problem_response(
            self.status, self.detail, kind=self.kind, headers=self.headers, **self.extra
        )


def not_found(what: str, ident: str) -> ApiProblem:
    # The same words whether the thing is missing or another tenant's: nothing tells them apart.
    return ApiProblem(404, f"no {what} {ident!r}", kind="not-found")


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def validation_errors(errors: list[Any]) -> list[dict[str, str]]:
    """Pydantic's errors as {location, message} pairs (input values left out: they may be
    secrets, and they are the caller's own)."""
    out = []
    for err in errors:
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        out.append({"location": _location(err.get("loc", ())), "message": msg})
    return out


def invalid_body(errors: list[Any]) -> ApiProblem:
    listed = validation_errors(errors)
    detail = "; ".join(f"{e['location']}: {e['message']}" for e in listed[:10])
    return ApiProblem(422, detail or "invalid request", kind="invalid-request", errors=listed)


async def _api_problem(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiProblem)
    return exc.response()


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        where = next(e for e in errors if e.get("type") == "json_invalid")
        ctx = where.get("ctx") or {}
        return problem_response(
            400,
            f"the body is not valid JSON: {ctx.get('error', 'malformed')}",
            kind="malformed-json",
        )
    return invalid_body(errors).response()


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404 and detail == "Not Found":
        detail = "no such endpoint; see /docs"
    elif exc.status_code == 405:
        detail = "this endpoint does not take that method; see /docs"
    return problem_response(exc.status_code, detail, headers=dict(exc.headers or {}))


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    # Temporal or PostgreSQL did not answer (or refused): the caller may retry later.
    log.warning("a backend failed: %s", type(exc).__name__)
    return problem_response(
        503,
        f"Temporal or PostgreSQL did not answer ({type(exc).__name__}); try again shortly",
        kind="unavailable",
        headers={"Retry-After": "5"},
    )


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error", exc_info=exc)
    return problem_response(500, "an unexpected error; the server log has the details")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiProblem, _api_problem)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RPCError, _unavailable)
    app.add_exception_handler(OperationalError, _unavailable)
    app.add_exception_handler(Exception, _unexpected)
