"""The questions the CLI asks at a terminal: what to decide on a call that waits for approval,
and what to do on Ctrl-C. Each runs the blocking prompt in a thread so the event loop (and the
run's stream) goes on meanwhile."""

from __future__ import annotations

import asyncio
import enum
import json
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.prompt import Prompt

from agentrun.protocol.events import ToolWaitData
from agentrun.protocol.statuses import Decision

DECIDED_BY = "cli"


@dataclass
class Answer:
    """A person's decision, or None to leave the call waiting."""

    decision: Decision | None
    fields: dict[str, Any] = field(default_factory=dict)


class OnInterrupt(enum.StrEnum):
    CANCEL = "cancel"
    DETACH = "detach"
    CONTINUE = "continue"


async def _ask(console: Console, question: str, **kwargs: Any) -> str:
    def ask() -> str:
        return str(Prompt.ask(question, console=console, **kwargs))

    return await asyncio.to_thread(ask)


async def ask_decision(console: Console, call: ToolWaitData) -> Answer:
    answer = await _ask(
        console,
        f"Run [bold]{call.name}[/] {call.arguments}? "
        r"\[a]pprove, \[e]dit arguments, \[r]eject, \[l]eave",
        choices=["a", "e", "r", "l"],
        default="a",
    )
    if answer == "a":
        return Answer(Decision.APPROVE, {"decided_by": DECIDED_BY})
    if answer == "r":
        reason = await _ask(console, "Reason", default="")
        return Answer(Decision.REJECT, {"decided_by": DECIDED_BY, "reason": reason or None})
    if answer == "e":
        return Answer(
            Decision.APPROVE_WITH_EDITS,
            {"decided_by": DECIDED_BY, "arguments": await ask_arguments(console, call.arguments)},
        )
    return Answer(None)


async def ask_arguments(console: Console, current: str) -> Any:
    while True:
        raw = await _ask(console, "Arguments (JSON)", default=current)
        try:
            return json.loads(raw)
        except ValueError as exc:
            console.print(f"[red]not JSON: {exc}[/]")


async def ask_on_interrupt(console: Console) -> OnInterrupt:
    answer = await _ask(
        console,
        "\nCancel the run, or detach and leave it running?",
        choices=[o.value for o in OnInterrupt],
        default=OnInterrupt.DETACH.value,
    )
    return OnInterrupt(answer)
