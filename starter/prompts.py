"""The questions the CLI asks at a terminal: what to decide on a call that waits for approval,
and what to do on Ctrl-C.

Answers are read from the terminal by the event loop itself (a reader on stdin), not by a
blocking input() in a thread: a question can then be withdrawn at once (Ctrl-C, the call was
decided elsewhere, the run ended) and the run's events go on being shown while it is open."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import sys
import termios
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.prompt import InvalidResponse, Prompt
from rich.text import Text

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


class Terminal:
    """Lines typed at the terminal (stdin, a tty in canonical mode), read by the event loop;
    and the question open now, so output printed meanwhile can put it back on screen."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._fd = sys.stdin.fileno()
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._partial = b""
        self._open: Text | None = None
        self._reading = False

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self._fd, self._on_readable)
        self._reading = True

    def close(self) -> None:
        if self._reading:
            asyncio.get_running_loop().remove_reader(self._fd)
            self._reading = False
        self._open = None

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except OSError:
            data = b""
        if not data:  # end of input (Ctrl-D at an empty line, or the terminal went away)
            asyncio.get_running_loop().remove_reader(self._fd)
            self._reading = False
            self._lines.put_nowait(None)
            return
        self._partial += data
        while b"\n" in self._partial:
            line, self._partial = self._partial.split(b"\n", 1)
            self._lines.put_nowait(line.decode(errors="replace"))

    def _discard_typed_ahead(self) -> None:
        # A line typed before the question was shown answers nothing.
        with contextlib.suppress(termios.error, OSError):
            termios.tcflush(self._fd, termios.TCIFLUSH)
        while not self._lines.empty():
            if self._lines.get_nowait() is None:
                self._lines.put_nowait(None)
                break
        self._partial = b""

    @property
    def asking(self) -> bool:
        return self._open is not None

    def before_output(self) -> None:
        """Output is about to be printed while a question is open: leave its line."""
        if self._open is not None:
            self.console.print()

    def after_output(self) -> None:
        """Put the open question back under the output just printed."""
        if self._open is not None:
            self.console.print(self._open, end="")

    async def ask(self, question: str, choices: list[str], default: str | None = None) -> str:
        """One of `choices` (or `default` for an empty line; with no default an empty line
        asks again). Ends of input raise EOFError; cancelling withdraws the question."""
        prompt = Prompt(question, console=self.console, choices=choices)
        self._discard_typed_ahead()
        try:
            while True:
                self._open = prompt.make_prompt(default if default is not None else ...)
                self.console.print(self._open, end="")
                value = await self._readline()
                if value == "" and default is not None:
                    return default
                try:
                    return str(prompt.process_response(value))
                except InvalidResponse as exc:
                    self._open = None
                    prompt.on_validate_error(value, exc)
        finally:
            self._open = None

    async def ask_text(self, question: str, default: str = "") -> str:
        self._open = Text.from_markup(question).append(f" ({default}): " if default else ": ")
        try:
            self.console.print(self._open, end="")
            value = await self._readline()
            return value or default
        finally:
            self._open = None

    async def _readline(self) -> str:
        line = await self._lines.get()
        if line is None:
            self._lines.put_nowait(None)
            raise EOFError
        return line.strip()


async def ask_decision(term: Terminal, call: ToolWaitData) -> Answer:
    """What to do with a call that waits. There is no default: a bare Enter approves nothing,
    it asks again."""
    answer = await term.ask(
        f"Run [bold]{call.name}[/] {call.arguments}? "
        r"\[a]pprove, \[e]dit arguments, \[r]eject, \[l]eave it waiting",
        choices=["a", "e", "r", "l"],
    )
    if answer == "a":
        return Answer(Decision.APPROVE, {"decided_by": DECIDED_BY})
    if answer == "r":
        reason = await term.ask_text("Reason")
        return Answer(Decision.REJECT, {"decided_by": DECIDED_BY, "reason": reason or None})
    if answer == "e":
        return Answer(
            Decision.APPROVE_WITH_EDITS,
            {"decided_by": DECIDED_BY, "arguments": await ask_arguments(term, call.arguments)},
        )
    return Answer(None)


async def ask_arguments(term: Terminal, current: str) -> Any:
    while True:
        raw = await term.ask_text("Arguments (JSON)", default=current)
        try:
            return json.loads(raw)
        except ValueError as exc:
            term.console.print(f"[red]not JSON: {exc}[/]")


async def ask_on_interrupt(term: Terminal) -> OnInterrupt:
    term.console.print()
    answer = await term.ask(
        "Cancel the run, or detach and leave it running (Ctrl-C again detaches)?",
        choices=[o.value for o in OnInterrupt],
        default=OnInterrupt.DETACH.value,
    )
    return OnInterrupt(answer)
