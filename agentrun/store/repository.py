"""`Repository`: the store's one object, a thin facade over its modules.

Each method opens one transaction (or a read-only session) and calls one function of
agentrun.store.events, .runs, .turns or .tool_calls, which hold the rules; activities, the CLI
and tests call the store through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence

from agentrun.contracts import AgentConfig, PendingCall, RecordedDecision, ToolCallRequest
from agentrun.db.models import DEFAULT_TENANT, LlmCall, Message, Run, RunEvent, RunStatus, ToolCall
from agentrun.protocol.events import EventData
from agentrun.protocol.statuses import LlmCallStatus
from agentrun.store import catalog, events, runs, tenancy, tool_calls, turns
from agentrun.store.access import TenantAccess
from agentrun.store.engine import Engine
from agentrun.store.events import EventIn
from agentrun.store.hub import EventHub
from agentrun.store.turns import LlmCallValues
from agentrun.store.usage import UsageAccess

HUB_POLL_INTERVAL = 1.0  # seconds: the hub's fallback for a lost notification


class Repository(TenantAccess, UsageAccess):
    """Async access to the agentrun store over one SQLAlchemy engine (psycopg 3)."""

    _hub: EventHub | None = None

    @classmethod
    def connect(
        cls, sqlalchemy_url: str, *, pool_size: int = 10, max_overflow: int | None = None
    ) -> Repository:
        return cls(*Engine.create(sqlalchemy_url, pool_size=pool_size, max_overflow=max_overflow))

    # -- the event log ---------------------------------------------------------------------

    async def append_events(self, run_id: str, batch: Sequence[EventIn]) -> list[RunEvent]:
        """Append events with gapless seqs; an event whose key is already there is returned
        as it was recorded and not appended again."""
        async with self.transaction() as db:
            return await events.append(db, run_id, batch)

    async def append_event(
        self, run_id: str, payload: EventData, key: str | None = None
    ) -> RunEvent:
        return (await self.append_events(run_id, [EventIn.of(payload, key)]))[0]

    async def append_stream_event(self, run_id: str, payload: EventData) -> int:
        """One event without a key in one statement (message.delta); returns its seq."""
        async with self.engine.begin() as conn:
            return await events.append_stream(conn, run_id, payload)

    async def read_events(
        self, run_id: str, after_seq: int = 0, limit: int = 1000
    ) -> list[RunEvent]:
        async with self.session() as db:
            return await events.read(db, run_id, after_seq, limit)

    def follow_events(
        self,
        run_id: str,
        after_seq: int = 0,
        *,
        poll_interval: float = 1.0,
        until_terminal: bool = True,
        stop: asyncio.Event | None = None,
    ) -> AsyncGenerator[RunEvent, None]:
        """Every event after `after_seq`, then new ones as they commit, through the
        Repository's event hub (one LISTEN connection for all its followers; see
        agentrun.store.hub; `stop` as EventHub.follow's). `poll_interval` is kept for callers:
        the hub polls every HUB_POLL_INTERVAL for all followers."""
        del poll_interval
        return self.event_hub().follow(run_id, after_seq, until_terminal=until_terminal, stop=stop)

    def event_hub(self) -> EventHub:
        """The Repository's hub, made on first use; Repository.close() closes it."""
        if self._hub is None:
            self._hub = EventHub(self, poll_interval=HUB_POLL_INTERVAL)
        return self._hub

    async def close(self) -> None:
        hub, self._hub = self._hub, None
        if hub is not None:
            await hub.close()
        await super().close()

    # -- sessions and runs -----------------------------------------------------------------

    async def open_run(
        self,
        *,
        run_id: str,
        session_id: str,
        model: str,
        config: AgentConfig,
        prompt: str,
        workflow_run_id: str | None = None,
        model_endpoint: str | None = None,
        tenant: str = DEFAULT_TENANT,
        parent_run_id: str | None = None,
    ) -> Run:
        """The run, its session claimed, its user message and QUEUED event (runs.open_run)."""
        async with self.transaction() as db:
            return await runs.open_run(
                db,
                run_id=run_id,
                session_id=session_id,
                model=model,
                config=config,
                prompt=prompt,
                workflow_run_id=workflow_run_id,
                model_endpoint=model_endpoint,
                tenant=tenant,
                parent_run_id=parent_run_id,
            )

    async def resume_run(self, run_id: str, first_execution_run_id: str) -> Run:
        """The run, for a later execution of the chain that opened it (runs.resume_run)."""
        async with self.transaction() as db:
            return await runs.resume_run(db, run_id, first_execution_run_id)

    async def session_holder(self, session_id: str) -> str | None:
        """The run that holds the session and has not ended, or None (read only: a client's
        early refusal; open_run applies the same rule under the session's lock)."""
        async with self.session() as db:
            return await runs.session_holder(db, session_id)

    async def publish_tools(self, task_queue: str, names: Sequence[str]) -> None:
        """Record the tools a worker of `task_queue` offers (see agentrun.store.catalog)."""
        async with self.transaction() as db:
            await catalog.publish(db, task_queue, names)

    async def known_tools(self, task_queue: str) -> set[str]:
        """The tools some worker of `task_queue` has offered."""
        async with self.session() as db:
            return await catalog.names(db, task_queue)

    async def check_session_free(self, session_id: str, run_id: str) -> None:
        """SessionBusyError unless the session is free or already held by `run_id`."""
        runs.refuse_if_held(session_id, await self.session_holder(session_id), run_id)

    async def set_run_status(
        self,
        run_id: str,
        status: RunStatus,
        *,
        error: str | None = None,
        final_text: str | None = None,
    ) -> tuple[Run, bool]:
        """Move the run forward; returns (run, changed). Late writes change nothing."""
        async with self.transaction() as db:
            return await runs.set_run_status(db, run_id, status, error=error, final_text=final_text)

    async def get_run(self, run_id: str, tenant: str | None = None) -> Run:
        """The run; NotFoundError when missing or (given `tenant`) another tenant's."""
        async with self.session() as db:
            return await tenancy.get_run(db, run_id, tenant)

    async def find_run(self, run_id: str) -> Run | None:
        async with self.session() as db:
            return await db.get(Run, run_id)

    async def final_assistant_text(self, run_id: str) -> str:
        async with self.session() as db:
            return await runs.final_assistant_text(db, run_id)

    # -- turns: messages and model calls ---------------------------------------------------

    async def record_model_turn(
        self,
        *,
        run_id: str,
        session_id: str,
        turn: int,
        attempt: int,
        model: str,
        text: str,
        tool_calls: Sequence[ToolCallRequest],
        call_values: LlmCallValues,
    ) -> tuple[Message, LlmCall, bool]:
        """Record a finished model turn once; returns (message, llm_call, inserted)."""
        async with self.transaction() as db:
            return await turns.record_model_turn(
                db,
                run_id=run_id,
                session_id=session_id,
                turn=turn,
                attempt=attempt,
                model=model,
                text=text,
                tool_calls=tool_calls,
                call_values=call_values,
            )

    async def record_llm_call(
        self,
        *,
        run_id: str,
        turn: int,
        attempt: int,
        model: str,
        status: LlmCallStatus,
        values: LlmCallValues,
    ) -> LlmCall:
        """The llm_calls row of one attempt (a failed one: a success is a model turn)."""
        async with self.transaction() as db:
            row, _ = await turns.insert_llm_call(db, run_id, turn, attempt, model, status, values)
            return row

    async def find_turn(self, run_id: str, turn: int) -> tuple[Message, LlmCall | None] | None:
        async with self.session() as db:
            return await turns.find_turn(db, run_id, turn)

    async def model_attempts(self, run_id: str, turn: int) -> list[LlmCall]:
        async with self.session() as db:
            return await turns.model_attempts(db, run_id, turn)

    async def mark_lost_attempts(
        self, run_id: str, turn: int, attempt: int, model: str, *, not_lost: Sequence[int] = ()
    ) -> int:
        async with self.transaction() as db:
            return await turns.mark_lost_attempts(
                db, run_id, turn, attempt, model, not_lost=not_lost
            )

    async def run_messages(self, run_id: str) -> list[Message]:
        async with self.session() as db:
            return await turns.run_messages(db, run_id)

    async def session_messages(self, session_id: str) -> list[Message]:
        async with self.session() as db:
            return await turns.session_messages(db, session_id)

    async def session_messages_before(
        self, session_id: str, before_id: int | None, limit: int
    ) -> list[Message]:
        async with self.session() as db:
            return await turns.session_messages_before(db, session_id, before_id, limit)

    # -- tool calls ------------------------------------------------------------------------

    async def get_tool_call(self, run_id: str, tool_call_id: str) -> ToolCall:
        async with self.session() as db:
            return await tool_calls.get_tool_call(db, run_id, tool_call_id)

    async def claim_tool_attempt(
        self, run_id: str, tool_call_id: str, *, max_attempts: int | None = None
    ) -> tuple[ToolCall, bool]:
        """Count an execution attempt unless the call is done; returns (row, started)."""
        async with self.transaction() as db:
            return await tool_calls.claim_tool_attempt(
                db, run_id, tool_call_id, max_attempts=max_attempts
            )

    async def record_tool_result(
        self, *, session_id: str, run_id: str, tool_call_id: str, result: str, is_error: bool
    ) -> tuple[ToolCall, Message]:
        """The result on its row, as a tool message and a tool.result event, once."""
        async with self.transaction() as db:
            return await tool_calls.record_tool_result(
                db,
                session_id=session_id,
                run_id=run_id,
                tool_call_id=tool_call_id,
                result=result,
                is_error=is_error,
            )

    async def request_waits(self, run_id: str, calls: Sequence[PendingCall]) -> tuple[Run, bool]:
        """Calls wait for a person or a caller; returns (run, status_changed)."""
        async with self.transaction() as db:
            return await tool_calls.request_waits(db, run_id, calls)

    async def record_decision(self, run_id: str, decision: RecordedDecision) -> ToolCall:
        """Who decided what on a call, once: a repeat returns the first decision."""
        async with self.transaction() as db:
            return await tool_calls.record_decision(db, run_id, decision)
