"""The retention activities: delete a batch of sessions idle since before a cutoff, each the way
`agentrun sessions delete` does (agentrun.client.forget), heartbeating between sessions; and a
batch of webhook deliveries that ended before another cutoff."""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client

from agentrun.client.forget import SessionActive, delete_session
from agentrun.contracts.retention import DeliveryPruneInput, RetentionBatchInput, RetentionResult
from agentrun.protocol.names import Activity
from agentrun.store import Repository
from agentrun.store.forget import idle_sessions
from agentrun.store.webhooks import WebhookStore

RETENTION_BY = "retention"


class RetentionActivities:
    def __init__(self, repo: Repository, client: Client | None = None) -> None:
        self.repo = repo
        self._client = client

    @activity.defn(name=Activity.DELETE_IDLE_SESSIONS)
    async def delete_idle_sessions(self, inp: RetentionBatchInput) -> RetentionResult:
        client = self._client or activity.client()
        async with self.repo.session() as db:
            sessions = [
                (s.id, s.tenant) for s in await idle_sessions(db, inp.idle_before, inp.limit)
            ]
        result = RetentionResult()
        for session_id, tenant in sessions:
            activity.heartbeat(session_id)
            try:
                done = await delete_session(
                    client, self.repo, session_id, tenant=tenant, by=RETENTION_BY
                )
            except SessionActive:  # a run started since the listing: not idle after all
                result.skipped.append(session_id)
                continue
            result.deleted.append(session_id)
            result.history_errors += len(done.history_errors)
        if result.deleted:
            activity.logger.info("retention deleted %d idle sessions", len(result.deleted))
        return result

    @activity.defn(name=Activity.PRUNE_WEBHOOK_DELIVERIES)
    async def prune_webhook_deliveries(self, inp: DeliveryPruneInput) -> int:
        """One batch of ended webhook deliveries created before the cutoff: how many went."""
        gone = await WebhookStore(self.repo).prune_deliveries(inp.before, inp.limit)
        if gone:
            activity.logger.info("retention deleted %d ended webhook deliveries", gone)
        return gone
