"""Who is calling: `Authorization: Bearer <key>` checked against the store's hashed keys, and
the scope each endpoint needs. A missing, malformed, unknown or revoked key is 401 (with
`WWW-Authenticate: Bearer`); a key without the scope is 403. The key's tenant scopes every
lookup after this (see agentrun.api.state)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Protocol

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agentrun.api.problems import ApiProblem
from agentrun.protocol.statuses import Scope


class KeyInfo(Protocol):
    """What the API uses of the store's KeyInfo (agentrun.store.keys): whose key it is and
    what it may do."""

    @property
    def tenant(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def scopes(self) -> frozenset[Scope]: ...


# Declares the scheme in the OpenAPI document (the docs page's Authorize button); the header
# itself is read and checked by `authenticate`.
_BEARER = HTTPBearer(auto_error=False, description="An API key: agentrun keys create")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="agentrun"'}
# Long enough for any key the store makes ("ar_<id>_<secret>"), short enough that a forged
# header never costs a database round trip with megabytes in it.
MAX_TOKEN_CHARS = 256


def _unauthorized(detail: str) -> ApiProblem:
    return ApiProblem(401, detail, kind="unauthorized", headers=dict(_CHALLENGE))


def bearer_token(request: Request, *, query_token: bool) -> str:
    header = request.headers.get("authorization")
    if header is None and query_token:
        token = request.query_params.get("access_token")
        if token:
            return token
    if header is None:
        raise _unauthorized(
            "no API key: send `Authorization: Bearer <key>` (create one with agentrun keys create)"
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("malformed Authorization header: expected `Bearer <key>`")
    return token.strip()


async def authenticate(request: Request, *, query_token: bool = False) -> KeyInfo:
    token = bearer_token(request, query_token=query_token)
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise _unauthorized("the API key is malformed, unknown or revoked")
    key = await request.app.state.repo.authenticate_api_key(token)
    if key is None:
        raise _unauthorized("the API key is malformed, unknown or revoked")
    return key


def require(scope: Scope, *, query_token: bool = False) -> Callable[[Request], Awaitable[KeyInfo]]:
    """A FastAPI dependency: the caller's key, which must hold `scope`. `query_token` also
    takes `?access_token=` (browsers' EventSource cannot send headers)."""

    async def dependency(
        request: Request,
        _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)] = None,
    ) -> KeyInfo:
        key = await authenticate(request, query_token=query_token)
        if scope not in key.scopes:
            held = ", ".join(sorted(str(s) for s in key.scopes)) or "none"
            raise ApiProblem(
                403,
                f"this API key lacks the {scope.value!r} scope (it has: {held})",
                kind="forbidden",
            )
        return key

    dependency.__name__ = f"require_{scope.value}"
    return dependency
