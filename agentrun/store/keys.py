"""HTTP API keys: made once, kept as a hash, checked in constant time, refused once revoked.

A token is `ar_<id>_<secret>`: the id (12 lowercase letters and digits, no `_`) is public and
names the row; the secret (32 random bytes, URL-safe base64) is shown once and the database
keeps only its SHA-256. A token is checked against the database on every call, with no cache:
several server processes may serve one tenant, and a revoke must be refused by all of them at
once. `last_used_at` is written at most once a minute per key, so a hot key does not write on
every request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from agentrun.contracts.run import TENANT_PATTERN
from agentrun.db.models import ApiKey
from agentrun.protocol.statuses import Scope
from agentrun.store.engine import NotFoundError, utcnow

TOKEN_PREFIX = "ar_"
ID_LENGTH = 12
_ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_RE = re.compile(rf"^[a-z0-9]{{{ID_LENGTH}}}$")
# secrets.token_urlsafe(32): 43 characters of the URL-safe base64 alphabet.
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_NAME_RE = re.compile(TENANT_PATTERN)
_SCOPE_VALUES = frozenset(s.value for s in Scope)
MAX_TOKEN_CHARS = 200
# The most often a key's last_used_at is written.
LAST_USED_GRANULARITY = timedelta(minutes=1)
# Compared against when the id is unknown, so a miss costs what a hit costs.
_NO_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class KeyInfo:
    """An API key as callers see it: never its secret nor the secret's hash."""

    id: str
    tenant: str
    name: str
    scopes: frozenset[Scope]
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, row: ApiKey) -> KeyInfo:
        return cls(
            id=row.id,
            tenant=row.tenant,
            name=row.name,
            scopes=frozenset(Scope(s) for s in row.scopes if s in _SCOPE_VALUES),
            created_at=row.created_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
        )

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def check_name(what: str, value: object) -> str:
    """`value` if it is a valid tenant or key name, else ValueError saying what is wrong."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ValueError(
            f"the {what} {value!r} is not valid: use 1 to 100 letters, digits, '.', '_' or '-'"
        )
    return value


def check_scopes(scopes: Iterable[Scope | str]) -> frozenset[Scope]:
    """The scopes as a set of Scope; ValueError for an unknown one or none at all."""
    out = set()
    for s in scopes:
        try:
            out.add(Scope(s))
        except ValueError:
            known = ", ".join(x.value for x in Scope)
            raise ValueError(f"unknown scope {s!r}: use {known}") from None
    if not out:
        raise ValueError("a key needs at least one scope (read, write, approve)")
    return frozenset(out)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: object) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        return None
    if not token.startswith(TOKEN_PREFIX):
        return None
    key_id, sep, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not sep or not _ID_RE.match(key_id) or not _SECRET_RE.match(secret):
        return None
    return key_id, secret


def _new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LENGTH))


async def create(
    db: AsyncSession, tenant: str, name: str, scopes: Iterable[Scope | str]
) -> tuple[KeyInfo, str]:
    """A new key of `tenant` named `name`; returns (its info, the token). The token is not
    stored and cannot be shown again. ValueError for a bad tenant, name or scopes, or a live
    key of the tenant with that name."""
    check_name("tenant", tenant)
    check_name("key name", name)
    wanted = sorted(s.value for s in check_scopes(scopes))
    live = await db.execute(
        select(ApiKey.id).where(
            ApiKey.tenant == tenant, ApiKey.name == name, ApiKey.revoked_at.is_(None)
        )
    )
    if live.first() is not None:
        raise _name_taken(tenant, name)
    key_id, secret = _new_id(), secrets.token_urlsafe(32)
    row = ApiKey(
        id=key_id, tenant=tenant, name=name, secret_sha256=hash_secret(secret), scopes=wanted
    )
    db.add(row)
    try:
        async with db.begin_nested():
            await db.flush()
    except IntegrityError:
        # Another create of the same name won the race (the partial unique index), or, once
        # in 2^62, the id was taken.
        raise _name_taken(tenant, name) from None
    await db.refresh(row)
    return KeyInfo.of(row), f"{TOKEN_PREFIX}{key_id}_{secret}"


def _name_taken(tenant: str, name: str) -> ValueError:
    return ValueError(
        f"tenant {tenant!r} already has a live key named {name!r}: revoke it first or choose "
        "another name"
    )


async def authenticate(db: AsyncSession, token: object) -> KeyInfo | None:
    """The key of `token` when it is well formed, known and not revoked, else None. Marks the
    key used (at most once a minute)."""
    parsed = parse_token(token)
    if parsed is None:
        return None
    key_id, secret = parsed
    row = await db.get(ApiKey, key_id)
    stored = row.secret_sha256 if row is not None else _NO_HASH
    matches = hmac.compare_digest(stored, hash_secret(secret))
    if row is None or not matches or row.revoked_at is not None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_GRANULARITY:
        # Conditional, so concurrent requests of one key write once, and never on a key that
        # a revoke committed meanwhile.
        await db.execute(
            update(ApiKey)
            .where(
                ApiKey.id == key_id,
                ApiKey.revoked_at.is_(None),
                or_(
                    ApiKey.last_used_at.is_(None),
                    ApiKey.last_used_at <= now - LAST_USED_GRANULARITY,
                ),
            )
            .values(last_used_at=now)
        )
        row.last_used_at = now
    return KeyInfo.of(row)


async def list_keys(db: AsyncSession, tenant: str | None = None) -> list[KeyInfo]:
    """Keys (revoked ones too), of one tenant or all, by tenant then creation."""
    stmt = select(ApiKey).order_by(ApiKey.tenant, ApiKey.created_at, ApiKey.id)
    if tenant is not None:
        stmt = stmt.where(ApiKey.tenant == tenant)
    return [KeyInfo.of(row) for row in (await db.execute(stmt)).scalars()]


async def revoke(db: AsyncSession, key: str, tenant: str | None = None) -> KeyInfo:
    """Revoke a key by id or by name (a live key's name; with `tenant`, that tenant's). A key
    already revoked is returned as it is. NotFoundError when none matches; ValueError when a
    name without a tenant names live keys of several tenants."""
    stmt = select(ApiKey).with_for_update()
    if tenant is not None:
        stmt = stmt.where(ApiKey.tenant == tenant)
    row = (await db.execute(stmt.where(ApiKey.id == key))).scalar_one_or_none()
    if row is None:
        named = (
            (await db.execute(stmt.where(ApiKey.name == key, ApiKey.revoked_at.is_(None))))
            .scalars()
            .all()
        )
        if len(named) > 1:
            tenants = ", ".join(sorted(r.tenant for r in named))
            raise ValueError(
                f"several tenants have a key named {key!r} ({tenants}): name the tenant"
            )
        row = named[0] if named else None
    if row is None:
        where = f" of tenant {tenant!r}" if tenant is not None else ""
        raise NotFoundError(f"no API key{where} with id or name {key!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await db.flush()
    return KeyInfo.of(row)
