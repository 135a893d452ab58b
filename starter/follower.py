"""Following a run in the terminal: its events from a cursor (typed, through agentrun.client),
approvals answered at a prompt or by --yes, Ctrl-C to cancel or detach; and `start_and_follow`,
what `run` and `demo` do."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

from temporalio.client import Client

from agentrun.client import (
    AnyEvent,
    Refused,
    RunEnded,
    cancel_run,
    decide,
    follow,
)
from agentrun.protocol.events import ToolApprovalRequestedEvent, ToolWaitData
from agentrun.protocol.statuses import Decision, ToolCallStatus
from agentrun.store import Repository
from starter.output import console, err_console, print_json
from starter.prompts import OnInterrupt, ask_decision, ask_on_interrupt
from starter.render import Renderer, as_json

AUTO_APPROVER = "agentrun run --yes"


class Follower:
    """Follows a run's event log; answers approval requests; handles Ctrl-C."""

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

    async def follow(self, after_seq: int = 0) -> str:
        """Follow to the run's end (or a detach); the run's status then."""
        self.cursor = after_seq
        interrupted = asyncio.Event()
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGINT)
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
        events = follow(self.repo, self.run_id, after_seq, poll_interval=0.5)
        try:
            while True:
                nxt = asyncio.ensure_future(anext(events))
                stop = asyncio.ensure_future(interrupted.wait())
                done, _ = await asyncio.wait({nxt, stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop in done:
                    nxt.cancel()
                    interrupted.clear()
                    if await self._on_interrupt():
                        self.detached = True
                        break
                    continue
                stop.cancel()
                try:
                    event = nxt.result()
                except StopAsyncIteration:
                    break
                self.cursor = event.seq
                await self._show(event)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            # remove_signal_handler leaves Python's default handler; put back asyncio.run's,
            # so a later Ctrl-C still unwinds through the callers' clean-up.
            signal.signal(signal.SIGINT, previous)
            self.renderer.end_text()
            with contextlib.suppress(Exception):
                await events.aclose()
        run = await self.repo.get_run(self.run_id)
        return run.status

    async def _show(self, event: AnyEvent) -> None:
        if self.as_json:
            print_json(as_json(event))
        else:
            self.renderer.event(event)
        if isinstance(event, ToolApprovalRequestedEvent):
            await self._answer_approval(event.data)

    async def _answer_approval(self, call: ToolWaitData) -> None:
        if not (self.auto_approve or self.interactive) or self.client is None:
            return
        row = await self.repo.get_tool_call(self.run_id, call.tool_call_id)
        if row.decision is not None or row.status != ToolCallStatus.PENDING_APPROVAL:
            return  # an old request, already decided
        fields: dict[str, Any] = {"arguments_sha256": call.arguments_sha256}
        decision: Decision
        if self.auto_approve:
            decision, fields["decided_by"] = Decision.APPROVE, AUTO_APPROVER
        else:
            self.renderer.end_text()
            answer = await ask_decision(console, call)
            if answer.decision is None:
                console.print("[dim]left undecided; the run keeps waiting[/]")
                return
            decision = answer.decision
            fields.update(answer.fields)
        try:
            recorded = await decide(self.client, self.run_id, call.tool_call_id, decision, **fields)
        except (Refused, RunEnded) as exc:
            console.print(f"[yellow]! decision refused: {exc}[/]")
            return
        if not self.as_json and self.auto_approve:
            console.print(f"[dim]auto-approved {recorded.name} (--yes)[/]")

    async def _on_interrupt(self) -> bool:
        """Ctrl-C: ask whether to cancel the run or detach; True means stop following."""
        self.renderer.end_text()
        if not self.interactive or self.client is None:
            self._detach_hint()
            return True
        answer = await ask_on_interrupt(console)
        if answer is OnInterrupt.CONTINUE:
            return False
        if answer is OnInterrupt.CANCEL:
            result = await cancel_run(self.client, self.run_id, requested_by="agentrun cli")
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
    console.print(
        f"[dim]{totals['prompt_tokens']}+{totals['completion_tokens']} tokens · "
        f"{totals['llm_calls']} model calls · {totals['tool_calls']} tool calls · "
        f"{totals['turns']} turns · {totals['seconds']}s[/]"
    )
