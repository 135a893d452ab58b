"""`TenantAccess`: the Repository's methods for API keys and tenants (agentrun.store.keys and
agentrun.store.tenancy), one transaction or read-only session each. Repository inherits them."""

from __future__ import annotations

from collections.abc import Iterable

from agentrun.db.models import Run, RunStatus, Session, ToolCall
from agentrun.protocol.statuses import Scope
from agentrun.store import keys, tenancy
from agentrun.store.engine import Engine
from agentrun.store.keys import KeyInfo


class TenantAccess(Engine):
    # -- API keys --------------------------------------------------------------------------

    async def create_api_key(
        self, tenant: str, name: str, scopes: Iterable[Scope | str]
    ) -> tuple[KeyInfo, str]:
        """A new key; returns (its info, the token `ar_<id>_<secret>`, shown once: only the
        secret's SHA-256 is kept). ValueError for a bad tenant, name or scopes, or a live key
        of that name."""
        async with self.transaction() as db:
            return await keys.create(db, tenant, name, scopes)

    async def authenticate_api_key(self, token: str) -> KeyInfo | None:
        """The live key of `token`, else None (malformed, unknown or revoked). Read from the
        database every time (no cache): a revoke is refused at once by every process."""
        async with self.transaction() as db:
            return await keys.authenticate(db, token)

    async def list_api_keys(self, tenant: str | None = None) -> list[KeyInfo]:
        async with self.session() as db:
            return await keys.list_keys(db, tenant)

    async def revoke_api_key(self, key: str, tenant: str | None = None) -> KeyInfo:
        """Revoke by id or name; NotFoundError when there is none."""
        async with self.transaction() as db:
            return await keys.revoke(db, key, tenant)

    # -- tenants ---------------------------------------------------------------------------

    async def claim_idempotency_key(
        self, tenant: str, key: str, request_sha256: str, run_id: str
    ) -> tuple[str, bool]:
        """(the key's run id, claimed by this call); IdempotencyMismatch for another body."""
        async with self.transaction() as db:
            return await tenancy.claim_idempotency_key(db, tenant, key, request_sha256, run_id)

    async def release_idempotency_key(self, tenant: str, key: str, run_id: str) -> bool:
        """Undo a claim for `run_id` whose start failed, so a retried request may start it."""
        async with self.transaction() as db:
            return await tenancy.release_idempotency_key(db, tenant, key, run_id)

    async def get_session(self, session_id: str, tenant: str | None = None) -> Session:
        """The session; NotFoundError when missing or another tenant's."""
        async with self.session() as db:
            return await tenancy.get_session(db, session_id, tenant)

    async def list_runs_page(
        self,
        tenant: str,
        *,
        session_id: str | None = None,
        status: RunStatus | None = None,
        waiting_approval: bool = False,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Run], str | None]:
        """The tenant's runs newest first and the next page's cursor (None on the last)."""
        async with self.session() as db:
            return await tenancy.list_runs_page(
                db,
                tenant,
                session_id=session_id,
                status=status,
                waiting_approval=waiting_approval,
                limit=limit,
                cursor=cursor,
            )

    async def pending_tool_calls(self, run_id: str) -> list[ToolCall]:
        """Calls waiting for a decision or a client-side result (none once the run ended)."""
        async with self.session() as db:
            return await tenancy.pending_tool_calls(db, run_id)

    async def list_sessions_page(
        self, tenant: str, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[tenancy.SessionSummary], str | None]:
        """The tenant's sessions newest first and the next page's cursor (None on the last)."""
        async with self.session() as db:
            return await tenancy.list_sessions_page(db, tenant, limit=limit, cursor=cursor)
