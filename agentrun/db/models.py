"""SQLAlchemy 2 typed models for the agentrun store.

Every row that a retried activity may write again carries a unique idempotency key, so the
store (agentrun.store) can make the second write a no-op with INSERT ... ON CONFLICT DO NOTHING.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The statuses are the protocol's (the strings in the database are their values); re-exported
# here for the code that imports them with the models.
from agentrun.protocol.statuses import (
    TERMINAL_RUN_STATUSES,
    LlmCallStatus,
    RunStatus,
    ToolCallStatus,
    WebhookDeliveryStatus,
)

__all__ = [
    "DEFAULT_TENANT",
    "TERMINAL_RUN_STATUSES",
    "ApiIdempotency",
    "ApiKey",
    "Base",
    "LlmCall",
    "LlmCallStatus",
    "Message",
    "QueuedMessage",
    "Run",
    "RunEvent",
    "RunMcpTool",
    "RunStatus",
    "Session",
    "Tenant",
    "ToolCall",
    "ToolCallStatus",
    "Webhook",
    "WebhookDelivery",
]

# The tenant of everything made without one (the CLI, the Python client, rows from before 0005).
DEFAULT_TENANT = "default"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSONB, list[Any]: JSONB}


def _now() -> Any:
    return func.now()


class Session(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    # The run that holds the session; a second run is refused while it is set.
    active_run_id: Mapped[str | None] = mapped_column(String(200))
    # Every run of a session is of the session's tenant (migration 0005: older rows `default`).
    tenant: Mapped[str] = mapped_column(
        String(100), default=DEFAULT_TENANT, server_default=DEFAULT_TENANT
    )
    # The session's budget (migration 0006; README "Cost and budgets"): None, no limit.
    max_cost_usd: Mapped[Decimal | None] = mapped_column(Numeric)
    max_total_tokens: Mapped[int | None] = mapped_column(BigInteger)
    # Set when the session was deleted (agentrun/store/forget.py): its text is erased, the
    # row stays as the tombstone and refuses new runs (migration 0010).
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What a new message does while a run is active (an IfBusy; None: reject). Migration 0009.
    if_busy: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (Index("ix_sessions_tenant_created_at", "tenant", "created_at"),)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    status: Mapped[str] = mapped_column(String(32), default=RunStatus.QUEUED.value)
    model: Mapped[str] = mapped_column(String(200))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    final_text: Mapped[str | None] = mapped_column(Text)
    turns: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    llm_call_count: Mapped[int] = mapped_column(Integer, default=0)
    tool_call_count: Mapped[int] = mapped_column(Integer, default=0)
    # Rollups of the run's llm_calls rows, written with each row (migration 0006): the exact
    # cost of the priced ones (None: none priced yet), how many reported tokens but have no
    # price, and the cached (part of prompt) and reasoning (part of completion) tokens.
    cost_usd: Mapped[Decimal | None] = mapped_column(Numeric)
    unpriced_calls: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Successful calls whose endpoint reported no usage: no budget can be kept over them.
    unmetered_calls: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    last_event_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # The Temporal run id of the workflow execution that opened this run: another execution
    # under the same workflow id (a closed run id started again) may not drive it. None for
    # runs opened before migration 0003.
    workflow_run_id: Mapped[str | None] = mapped_column(String(64))
    tenant: Mapped[str] = mapped_column(
        String(100), default=DEFAULT_TENANT, server_default=DEFAULT_TENANT
    )
    # A sub-agent's run: the run whose tool call started it (migration 0008).
    parent_run_id: Mapped[str | None] = mapped_column(String(200), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_runs_tenant_created_at", "tenant", "created_at"),)


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(500), unique=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"))
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    turn: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str | None] = mapped_column(Text)
    tool_calls: Mapped[list[Any] | None] = mapped_column()
    tool_call_id: Mapped[str | None] = mapped_column(String(200))
    name: Mapped[str | None] = mapped_column(String(200))
    token_estimate: Mapped[int] = mapped_column(Integer, default=0)
    # None: a conversation message. "summary": a compaction summary (activities/compaction.py)
    # standing, in later contexts, for the session's messages up to covers_to_id (0010).
    kind: Mapped[str | None] = mapped_column(String(16))
    covers_to_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    # None, or a MessageState: interrupted (a cancelled run's partial answer), rolled_back.
    state: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (Index("ix_messages_session_id_id", "session_id", "id"),)


class ToolCall(Base):
    __tablename__ = "tool_calls"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(500), unique=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    turn: Mapped[int] = mapped_column(Integer)
    tool_call_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    arguments: Mapped[str] = mapped_column(Text)
    arguments_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32), default=ToolCallStatus.PENDING.value)
    decision: Mapped[str | None] = mapped_column(String(32))
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decision_reason: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The arguments the tool ran with when a person edited them on approval.
    decided_arguments: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str | None] = mapped_column(Text)
    is_error: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("run_id", "tool_call_id"),
        # Migration 0012 (built CONCURRENTLY there): the approvals gauge's count.
        Index(
            "ix_tool_calls_pending_approval",
            "run_id",
            postgresql_where=text("status = 'pending_approval'"),
        ),
    )


class LlmCall(Base):
    __tablename__ = "llm_calls"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(500), unique=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    turn: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))  # an LlmCallStatus
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    time_to_first_token_ms: Mapped[int | None] = mapped_column(Integer)
    response_id: Mapped[str | None] = mapped_column(String(200))
    finish_reason: Mapped[str | None] = mapped_column(String(64))
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    # Migration 0006: cached tokens are part of prompt_tokens, reasoning part of
    # completion_tokens; cost_usd is NULL when no price is known or no usage was reported.
    cached_tokens: Mapped[int | None] = mapped_column(Integer)
    reasoning_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[Decimal | None] = mapped_column(Numeric)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=_now(), index=True
    )


class RunEvent(Base):
    __tablename__ = "run_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())

    __table_args__ = (
        UniqueConstraint("run_id", "seq"),
        UniqueConstraint("run_id", "idempotency_key", name="uq_run_events_run_id_idempotency_key"),
    )


class ToolCatalogEntry(Base):
    """A tool some worker of a task queue offers (written when a worker starts). Clients check
    a run's tool names against it before they start a run; the worker's own check at open
    stays the authority."""

    __tablename__ = "tool_catalog"

    task_queue: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class RunMcpTool(Base):
    """A tool of an MCP server as listed when its run opened (migration 0007): the run uses
    this record, not the server's list of the moment, until it ends."""

    __tablename__ = "run_mcp_tools"

    run_id: Mapped[str] = mapped_column(
        String(200), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    server: Mapped[str] = mapped_column(String(64))
    tool: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, server_default="")
    input_schema: Mapped[dict[str, Any]] = mapped_column(JSONB)
    annotations: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    approval: Mapped[str] = mapped_column(String(32))
    timeout_s: Mapped[float] = mapped_column(Float)
    max_attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class Tenant(Base):
    """A tenant's own settings: the secret its webhooks are signed with (made on first use)."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    webhook_secret: Mapped[str | None] = mapped_column(Text)
    # The secret before the last rotation: deliveries carry its signature too for a day.
    webhook_secret_previous: Mapped[str | None] = mapped_column(Text)
    webhook_secret_rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class ApiKey(Base):
    """An HTTP API key: its id is public (the key's prefix), its secret is kept as a SHA-256."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index(
            "uq_api_keys_tenant_name_live",
            "tenant",
            "name",
            unique=True,
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )


class ApiIdempotency(Base):
    """An `Idempotency-Key` of POST /v1/runs: the run it started and the body it came with."""

    __tablename__ = "api_idempotency"

    tenant: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class Webhook(Base):
    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100), index=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookDelivery(Base):
    """One event announced to one URL: an outbox row written with the event, then delivered
    (with retries) by the worker; its id is the idempotency id the receiver sees."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100))
    webhook_id: Mapped[str | None] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(Text)
    run_id: Mapped[str] = mapped_column(String(200), index=True)
    session_id: Mapped[str] = mapped_column(String(200))
    event_seq: Mapped[int] = mapped_column(BigInteger)
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(
        String(16), default=WebhookDeliveryStatus.PENDING.value, server_default="pending"
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When a worker started the delivery's workflow; None: no worker has taken it yet.
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_webhook_deliveries_status_created_at", "status", "created_at"),
        Index("ix_webhook_deliveries_tenant_created_at", "tenant", "created_at"),
    )


class QueuedMessage(Base):
    """A message accepted for a session with a policy (agentrun.store.queue): its run starts,
    in `position` order (preempting ones first), when the session is free."""

    __tablename__ = "queued_messages"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"))
    tenant: Mapped[str] = mapped_column(
        String(100), default=DEFAULT_TENANT, server_default=DEFAULT_TENANT
    )
    position: Mapped[int] = mapped_column(BigInteger)
    run_id: Mapped[str] = mapped_column(String(200), unique=True)
    prompt: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column()
    policy: Mapped[str] = mapped_column(String(16))
    # interrupt / rollback: started before the messages that wait, once its run is cancelled.
    preempt: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # The run that was active when the message came (the run it interrupts or rolls back).
    supersedes_run_id: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default="queued", server_default="queued")
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("session_id", "position", name="uq_queued_messages_session_id_position"),
        Index("ix_queued_messages_session_id_state", "session_id", "state"),
    )
