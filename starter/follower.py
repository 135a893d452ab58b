"""Following a run in the terminal: its events from a cursor (typed, through agentrun.client),
approvals answered at a prompt or by --yes, Ctrl-C to cancel or detach; and `start_and_follow`,
what `run` and `demo` do."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError

from agentrun.client import (
    AlreadyDecided,
    AnyEvent,
    InvalidDecision,
    Refused,
    RunEnded,
    SchemaMismatch,
    UnknownToolCall,
    cancel_run,
    decide,
    follow,
)
from agentrun.protocol.events import (
    RunStatusData,
    ToolApprovalRequestedEvent,
    ToolDecidedData,
    ToolWaitData,
)
from agentrun.protocol.statuses import Decision, RunStatus, ToolCallStatus
from agentrun.store import Repository
from starter.exits import CliError
from starter.output import console, err_console, print_json
from starter.prompts import Answer, OnInterrupt, Terminal, ask_decision, ask_on_interrupt
from starter.render import Renderer, as_json

AUTO_APPROVER = "agentrun run --yes"


class Follower:
    """Follows a run's event log; answers approval requests; handles Ctrl-C.

    Events are shown in the order of the log, always: a question open at the terminal (an
    approval, Ctrl-C's cancel-or-detach) never holds them back, it is put back under them.
    Approvals are answered by one task at a time, beside the reading of the log."""

    def __init__(
        self,
        repo: Repository,
        client: Client | None,
        run_id: str,
        *,
        as_json: bool,
        auto_approve: bool = False,
        interactive: bool = False,
    ) -> None:
        self.repo = repo
        self.client = client
        self.run_id = run_id
        self.as_json = as_json
        self.auto_approve = auto_approve
        self.interactive = interactive and not as_json
        self.renderer = Renderer(console)
        self.cursor = 0
        self.detached = False
        self.term: Terminal | None = None
        self._waiting: dict[str, ToolWaitData] = {}
        self._deciding: asyncio.Task[None] | None = None
        self._asking_for: str | None = None
        self._cancelled = False

    async def follow(self, after_seq: int = 0) -> str:
        """Follow to the run's end (or a detach); the run's status then."""
        self.cursor = after_seq
        interrupted = asyncio.Event()
        events = follow(self.repo, self.run_id, after_seq, poll_interval=0.5)
        nxt: asyncio.Future[AnyEvent] | None = None
        with self._on_sigint(interrupted.set), self._terminal():
            try:
                while not self.detached:
                    if nxt is None:
                        nxt = asyncio.ensure_future(anext(events))
                    await self._decide_when_idle(nxt)
                    if not await self._next(nxt, interrupted):
                        continue
                    try:
                        event = nxt.result()
                    except StopAsyncIteration:
                        break
                    nxt = None
                    self.cursor = event.seq
                    await self._show(event)
            finally:
                if nxt is not None:
                    nxt.cancel()
                await self._stop_deciding()
                self.renderer.end_text()
                with contextlib.suppress(Exception):
                    await events.aclose()
        run = await self.repo.get_run(self.run_id)
        return run.status

    async def _next(self, nxt: asyncio.Future[AnyEvent], interrupted: asyncio.Event) -> bool:
        """Wait for the next event (True), or handle a Ctrl-C or a finished decision (False)."""
        stop = asyncio.ensure_future(interrupted.wait())
        waits: set[asyncio.Future[Any]] = {nxt, stop}
        if self._deciding is not None:
            waits.add(self._deciding)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if interrupted.is_set():
            interrupted.clear()
            self.detached = await self._on_interrupt(interrupted)
            return False
        if self._deciding is not None and self._deciding.done():
            task, self._deciding = self._deciding, None
            task.result()  # a decision task's own failure is the command's
            return nxt.done()
        return True

    @contextlib.contextmanager
    def _on_sigint(self, handler: Callable[[], None]) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGINT)
        loop.add_signal_handler(signal.SIGINT, handler)
        try:
            yield
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            # remove_signal_handler leaves Python's default handler; put back asyncio.run's,
            # so a later Ctrl-C still unwinds through the callers' clean-up.
            signal.signal(signal.SIGINT, previous)

    @contextlib.contextmanager
    def _terminal(self) -> Iterator[None]:
        if self.interactive and self.client is not None:
            self.term = Terminal(console)
            self.term.start()
        try:
            yield
        finally:
            if self.term is not None:
                self.term.close()

    # -- showing events ------------------------------------------------------------------

    async def _show(self, event: AnyEvent) -> None:
        if self.as_json:
            print_json(as_json(event))
        else:
            asking = self.term is not None and self.term.asking
            if asking and self.term is not None:
                self.term.before_output()
                self.renderer.live_capable = False
            self.renderer.event(event)
            if asking and self.term is not None:
                self.renderer.end_text()
                self.renderer.live_capable = console.is_terminal
        await self._track(event)
        if self.term is not None and not self.as_json:
            self.term.after_output()

    async def _track(self, event: AnyEvent) -> None:
        """Keep the calls that wait for an answer from here; withdraw a stale question."""
        data = event.data
        if isinstance(event, ToolApprovalRequestedEvent):
            if (self.auto_approve or self.term is not None) and self.client is not None:
                self._waiting[event.data.tool_call_id] = event.data
        elif isinstance(data, ToolDecidedData):
            self._waiting.pop(data.tool_call_id, None)
            if self._asking_for == data.tool_call_id:
                await self._stop_deciding()
                self._say(
                    f"the question is closed: {data.name} was already decided by "
                    f"{data.decided_by} ({data.decision})"
                )
        elif isinstance(data, RunStatusData) and data.status.terminal:
            self._waiting.clear()
            if self._asking_for is not None:
                await self._stop_deciding()
                self._say(f"the question is closed: the run ended {data.status.value}")

    def _say(self, text: str) -> None:
        if not self.as_json:
            console.print(f"[yellow]! {text}[/]")

    # -- approvals -----------------------------------------------------------------------

    async def _decide_when_idle(self, nxt: asyncio.Future[AnyEvent]) -> None:
        """Start answering waiting calls once the events read so far are shown: a question is
        not put up between a request and the events committed with it."""
        if not self._waiting or self._deciding is not None or self._cancelled:
            return
        await asyncio.sleep(0)  # lets `nxt` take an event already read, if there is one
        if not nxt.done():
            self._deciding = asyncio.ensure_future(self._decide_all())

    async def _stop_deciding(self) -> None:
        task, self._deciding = self._deciding, None
        self._asking_for = None
        if task is not None and not task.done():
            task.cancel()
            # A decision cancelled in flight may surface as the SDK's own error, not as
            # CancelledError; either way the call is asked again unless the log says decided.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _decide_all(self) -> None:
        while self._waiting:
            call = next(iter(self._waiting.values()))
            try:
                await self._decide_one(call)
            finally:
                self._asking_for = None
            self._waiting.pop(call.tool_call_id, None)

    async def _decide_one(self, call: ToolWaitData) -> None:
        assert self.client is not None
        row = await self.repo.get_tool_call(self.run_id, call.tool_call_id)
        if row.decision is not None or row.status != ToolCallStatus.PENDING_APPROVAL:
            return  # an old request, already decided
        fields: dict[str, Any]
        while True:
            if self.auto_approve:
                decision, fields = Decision.APPROVE, {"decided_by": AUTO_APPROVER}
            else:
                answer = await self._ask(call)
                if answer is None:
                    return
                decision, fields = answer
            try:
                await decide(
                    self.client,
                    self.run_id,
                    call.tool_call_id,
                    decision,
                    arguments_sha256=call.arguments_sha256,
                    **fields,
                )
                return
            except (SchemaMismatch, InvalidDecision) as exc:
                self._say(f"decision refused: {exc}")
                if self.auto_approve:
                    return
            except (AlreadyDecided, UnknownToolCall):
                await self._stale(call)
                return
            except (Refused, RunEnded, RPCError) as exc:
                if not await self._ended():
                    self._say(f"decision refused: {exc}")
                return

    async def _ask(self, call: ToolWaitData) -> tuple[Decision, dict[str, Any]] | None:
        assert self.term is not None
        self.renderer.end_text()
        self._asking_for = call.tool_call_id
        try:
            answer = await ask_decision(self.term, call)
        except EOFError:
            answer = Answer(None)
        finally:
            self._asking_for = None
        if answer.decision is None:
            self._say(f"left undecided; the run keeps waiting (tool call {call.tool_call_id})")
            return None
        return answer.decision, answer.fields

    async def _stale(self, call: ToolWaitData) -> None:
        row = await self.repo.get_tool_call(self.run_id, call.tool_call_id)
        by = f" by {row.decided_by}" if row.decided_by else ""
        self._say(f"{call.name} was already decided{by} ({row.decision or 'no decision'})")

    async def _ended(self) -> bool:
        """Whether the run has ended (then say so); a decision sent to it is moot."""
        run = await self.repo.get_run(self.run_id)
        if not RunStatus(run.status).terminal:
            return False
        self._say(f"the run ended {run.status}")
        return True

    # -- Ctrl-C ----------------------------------------------------------------------------

    async def _on_interrupt(self, again: asyncio.Event) -> bool:
        """Ctrl-C: ask whether to cancel the run or detach; True means stop following."""
        await self._stop_deciding()  # a question open now is withdrawn; its call still waits
        self.renderer.end_text()
        if self.term is None or self.client is None:
            self._detach_hint()
            return True
        question = asyncio.ensure_future(ask_on_interrupt(self.term))
        second = asyncio.ensure_future(again.wait())
        try:
            await asyncio.wait({question, second}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            second.cancel()
            if not question.done():
                question.cancel()
                console.print()
        again.clear()
        answer = OnInterrupt.DETACH
        if question.done() and not question.cancelled() and question.exception() is None:
            answer = question.result()
        if answer is OnInterrupt.CONTINUE:
            return False
        if answer is OnInterrupt.CANCEL:
            self._cancelled = True
            self._waiting.clear()
            try:
                result = await cancel_run(self.client, self.run_id, requested_by="agentrun cli")
            except (RPCError, RunEnded) as exc:
                if not await self._ended():
                    raise CliError(f"could not cancel the run: {exc}") from None
                return False
            console.print(f"{result.status}: {result.message}")
            return False  # keep following to the CANCELED event
        self._detach_hint()
        return True

    def _detach_hint(self) -> None:
        err_console.print(
            f"detached; the run goes on. Follow it again with: agentrun follow {self.run_id} "
            f"--from {self.cursor}"
        )


async def usage(repo: Repository, run_id: str, started: float | None) -> dict[str, Any]:
    """The run's totals as recorded, and its duration (or the time since `started`)."""
    run = await repo.get_run(run_id)
    end = run.finished_at or run.updated_at
    return {
        "prompt_tokens": run.prompt_tokens,
        "completion_tokens": run.completion_tokens,
        "llm_calls": run.llm_call_count,
        "tool_calls": run.tool_call_count,
        "turns": run.turns,
        # Exact, as a string (README Cost and budgets); None: no call was priced.
        "cost_usd": None if run.cost_usd is None else str(run.cost_usd),
        "unpriced_calls": run.unpriced_calls,
        "seconds": (
            round(time.monotonic() - started, 2)
            if started is not None
            else round((end - run.created_at).total_seconds(), 2)
        ),
    }


def print_end(
    run_id: str, status: str, totals: dict[str, Any], as_json: bool, detached: bool
) -> None:
    if as_json:
        print_json({"run_id": run_id, "status": status, "usage": totals, "detached": detached})
        return
    if detached or not totals["llm_calls"]:
        # A run followed no further, or one whose record holds no model call yet: its totals
        # would be noughts that say nothing true.
        return
    console.print(
        f"[dim]{totals['prompt_tokens']}+{totals['completion_tokens']} tokens · "
        f"{totals['llm_calls']} model calls · {totals['tool_calls']} tool calls · "
        f"{totals['turns']} turns · {totals['seconds']}s{_cost(totals)}[/]"
    )


def _cost(totals: dict[str, Any]) -> str:
    cost, unpriced = totals.get("cost_usd"), totals.get("unpriced_calls") or 0
    text = "" if cost is None else f" · ${Decimal(cost).normalize():f}"
    return text + (f" · {unpriced} unpriced model calls" if unpriced else "")
