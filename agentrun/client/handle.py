"""The object API: AgentRunClient (a Temporal client, a task queue, the store) and RunHandle
(one run and what a caller can do with it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any

from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
)

from agentrun.client.calls import (
    _handle,
    cancel_run,
    connect,
    decide,
    describe_run,
    run_result,
    run_status,
    signal_decision,
    start_run,
    submit_tool_result,
)
from agentrun.client.errors import AgentRunError, RunEnded, RunNotFound, RunNotStarted
from agentrun.client.queue import queued_message_of, wait_started
from agentrun.client.reading import AnyEvent, RunSummary, follow, list_runs
from agentrun.contracts import AgentConfig, CancelAnswer, RecordedDecision, RunResult, RunStatusView
from agentrun.contracts.queue import Accepted
from agentrun.protocol.queue import IfBusy
from agentrun.protocol.statuses import Decision
from workflows.agent import AgentRunWorkflow

if TYPE_CHECKING:
    from agentrun.settings import Settings
    from agentrun.store import Repository


class RunHandle:
    """One run: what a caller can do with it. Cheap to make; it holds no connection."""

    def __init__(
        self,
        client: Client,
        run_id: str,
        *,
        store: Repository | None = None,
        workflow: WorkflowHandle[AgentRunWorkflow, RunResult] | None = None,
        accepted: Accepted | None = None,
    ) -> None:
        self.client = client
        self.id = run_id
        self.store = store
        self.workflow = workflow or _handle(client, run_id)
        # Set for a message taken by the session's queue (a policy): its run may not exist yet.
        self.accepted = accepted

    @property
    def run_id(self) -> str:
        return self.id

    async def decide(
        self, tool_call_id: str, decision: Decision | str, **kwargs: Any
    ) -> RecordedDecision:
        return await decide(self.client, self.id, tool_call_id, decision, **kwargs)

    async def signal_decision(
        self, tool_call_id: str, decision: Decision | str, **kwargs: Any
    ) -> None:
        await signal_decision(self.client, self.id, tool_call_id, decision, **kwargs)

    async def submit_tool_result(
        self, tool_call_id: str, result: Any, *, is_error: bool = False
    ) -> str:
        return await submit_tool_result(
            self.client, self.id, tool_call_id, result, is_error=is_error
        )

    async def cancel(
        self, reason: str | None = None, requested_by: str | None = None
    ) -> CancelAnswer:
        return await cancel_run(self.client, self.id, reason=reason, requested_by=requested_by)

    async def status(self) -> RunStatusView:
        return await run_status(self.client, self.id)

    async def result(self) -> RunResult:
        if self.accepted is not None and self.store is not None:
            await wait_started(self.store, self.accepted.message_id)  # queued: not started yet
        return await run_result(self.client, self.id)

    async def describe(self) -> WorkflowExecutionDescription:
        return await describe_run(self.client, self.id)

    async def opened(self, timeout: float = 60) -> None:
        """Wait (bounded) until a worker has opened the run: its record and first events exist.
        A run that ended without being opened raises RunRefused (or RunFailed, or RunEnded
        when it was cancelled); none opened within `timeout` raises RunNotStarted (no worker
        polls the task queue, say)."""
        store = self._store()
        deadline = time.monotonic() + timeout
        message_id = await self._queued_as(store)
        if message_id is not None:  # queued: its run starts when those before it ended
            await wait_started(store, message_id, timeout)
        while await store.find_run(self.id) is None:
            try:
                desc = await describe_run(self.client, self.id)
            except RunNotFound:
                # Its message has just started: the session's queue starts its workflow next.
                if message_id is None or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
                continue
            if desc.status is not None and desc.status != WorkflowExecutionStatus.RUNNING:
                ended = await self.result()  # raises why it ended, if it failed
                raise RunEnded(self.id, ended.status)
            if time.monotonic() > deadline:
                raise RunNotStarted(self.id, timeout)
            # The record is written by the worker; no notification announces it.
            await asyncio.sleep(0.2)

    async def _queued_as(self, store: Repository) -> str | None:
        """The queued message this run waits as (a handle made from a bare run id included)."""
        if self.accepted is not None:
            return self.accepted.message_id
        if await store.find_run(self.id) is not None:
            return None
        row = await queued_message_of(store, self.id)
        return row.id if row is not None else None

    async def follow(
        self,
        after_seq: int = 0,
        *,
        poll_interval: float = 1.0,
        until_terminal: bool = True,
        open_timeout: float = 60,
    ) -> AsyncGenerator[AnyEvent, None]:
        """The run's events after `after_seq`, typed, live (see agentrun.client.follow); a run
        just started is waited for until it is opened (`opened`)."""
        store = self._store()
        if until_terminal and await store.find_run(self.id) is None:
            await self.opened(open_timeout)
        events = follow(
            store, self.id, after_seq, poll_interval=poll_interval, until_terminal=until_terminal
        )
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()

    def _store(self) -> Repository:
        if self.store is None:
            raise AgentRunError("reading a run's events needs the store: give the client one")
        return self.store


class AgentRunClient:
    """A Temporal client, the task queue runs start on, and (for follow and the start-time
    checks) the store."""

    def __init__(self, temporal: Client, task_queue: str, *, store: Repository | None = None):
        self.temporal = temporal
        self.task_queue = task_queue
        self.store = store

    @classmethod
    async def connect(
        cls, settings: Settings, *, store: Repository | None = None
    ) -> AgentRunClient:
        return cls(await connect(settings), settings.task_queue, store=store)

    async def start(
        self,
        prompt: str,
        *,
        session_id: str | None = None,
        run_id: str | None = None,
        config: AgentConfig | Mapping[str, Any] | None = None,
        tenant: str | None = None,
        if_busy: IfBusy | str | None = None,
    ) -> RunHandle:
        return await start_run(
            self.temporal,
            self.task_queue,
            prompt,
            session_id=session_id,
            run_id=run_id,
            config=config,
            repo=self.store,
            tenant=tenant,
            if_busy=if_busy,
        )

    def handle(self, run_id: str) -> RunHandle:
        return RunHandle(self.temporal, run_id, store=self.store)

    async def list_runs(self, **filters: Any) -> list[RunSummary]:
        return await list_runs(self.temporal, **filters)
