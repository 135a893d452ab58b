"""How `agentrun run` and `agentrun follow` show a run's events: live text, tool calls, results.

Events are the typed protocol events (agentrun.protocol.events); each payload class has its own
method. At a terminal the text of the current turn is a live region, so a stream.reset (a
retried model attempt) wipes that turn's partial text off the screen; piped, text is printed as
it comes, and a reset of a turn whose text was shown is a marked line (a failed attempt that
showed nothing takes nothing back). `as_json` is the --json form of one event."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from agentrun.client import AnyEvent
from agentrun.protocol.events import (
    ErrorData,
    EventData,
    MessageCompletedData,
    MessageDeltaData,
    RunStatusData,
    StreamResetData,
    ToolCallData,
    ToolDecidedData,
    ToolDecisionInvalidData,
    ToolResultData,
    ToolResultRequestedData,
    ToolWaitData,
)
from agentrun.protocol.statuses import RunStatus
from starter.subrun_lines import SUBRUN_LINES


def as_json(event: AnyEvent) -> dict[str, Any]:
    """The event as --json prints it: seq, type and the payload as stored."""
    data = event.data
    if isinstance(data, EventData):
        data = data.model_dump(mode="json", exclude_unset=True)
    return {"seq": event.seq, "type": str(event.type), "data": data}


class Renderer:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.live_capable = console.is_terminal
        self._live: Live | None = None
        self._text = ""
        self._plain_open = False
        # Turns whose partial text has been shown: a stream.reset of any other turn (a failed
        # attempt that produced no text) has nothing to take back, so it says nothing.
        self._turns_shown: set[int] = set()
        self._shows: dict[type, Callable[[Any], None]] = {
            MessageDeltaData: self._delta,
            StreamResetData: self._reset,
            MessageCompletedData: lambda _: self.end_text(),
            ToolCallData: self._tool_call,
            ToolWaitData: self._approval_requested,
            ToolResultRequestedData: self._result_requested,
            ToolDecidedData: self._decided,
            ToolResultData: self._tool_result,
            ErrorData: self._error,
            ToolDecisionInvalidData: self._decision_invalid,
            RunStatusData: self._status,
            **{t: self._subrun for t in SUBRUN_LINES},
        }

    def event(self, event: AnyEvent) -> None:
        data = event.data
        show = self._shows.get(type(data))
        if show is None:  # an event type this version does not know: nothing to show
            self.end_text()
            return
        show(data)

    # -- text ----------------------------------------------------------------------------

    def delta(self, text: str) -> None:
        self._text += text
        if self.live_capable:
            if self._live is None:
                self._live = Live(Text(self._text), console=self.console, auto_refresh=False)
                self._live.start()
            self._live.update(Text(self._text), refresh=True)
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
            self._plain_open = True

    def reset(self, turn: int, attempt: int) -> None:
        shown = turn in self._turns_shown
        self._turns_shown.discard(turn)
        self._text = ""
        if self._live is not None:  # the partial text is still live: wipe it off the screen
            self._live.update(Text(""), refresh=True)
            return
        self._end_plain()
        if shown:
            self.console.print(
                f"[yellow]↺ model attempt {attempt} for turn {turn}: "
                "the partial text above is dropped[/]"
            )

    def end_text(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        self._end_plain()
        self._text = ""

    def _end_plain(self) -> None:
        if self._plain_open:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self._plain_open = False

    # -- one method per payload ------------------------------------------------------------

    def _subrun(self, data: EventData) -> None:
        self.end_text()
        self.console.print(SUBRUN_LINES[type(data)](data), soft_wrap=True)

    def _delta(self, data: MessageDeltaData) -> None:
        if data.text:
            self._turns_shown.add(data.turn)
        self.delta(data.text)

    def _reset(self, data: StreamResetData) -> None:
        self.reset(data.turn, data.attempt)

    def _tool_call(self, data: ToolCallData) -> None:
        self.end_text()
        self.console.print(f"[cyan]→ {data.name}[/] {_short(data.arguments)}")

    def _approval_requested(self, data: ToolWaitData) -> None:
        self.end_text()
        self.console.print(
            f"[magenta]? approval needed[/] for [bold]{data.name}[/] "
            f"{_short(data.arguments)}  (tool call {data.tool_call_id})"
        )

    def _result_requested(self, data: ToolResultRequestedData) -> None:
        self.end_text()
        self.console.print(
            f"[magenta]? waiting for the client's result[/] of {data.name} "
            f"(tool call {data.tool_call_id})"
        )

    def _decided(self, data: ToolDecidedData) -> None:
        self.end_text()
        reason = f": {data.reason}" if data.reason else ""
        self.console.print(f"[magenta]• {data.decision}[/] by {data.decided_by or '?'}{reason}")

    def _tool_result(self, data: ToolResultData) -> None:
        self.end_text()
        mark = "[red]✗[/]" if data.is_error else "[green]✓[/]"
        lines = data.result.splitlines() or [""]
        more = f" … (+{len(lines) - 6} lines)" if len(lines) > 6 else ""
        self.console.print(f"{mark} {data.name}: " + "\n    ".join(lines[:6]) + more)

    def _error(self, data: ErrorData) -> None:
        self.end_text()
        self.console.print(f"[yellow]! {data.message}[/]")

    def _decision_invalid(self, data: ToolDecisionInvalidData) -> None:
        self.end_text()
        self.console.print(f"[yellow]! decision not applied: {data.error}[/]")

    def _status(self, data: RunStatusData) -> None:
        self.end_text()
        if data.status.terminal:
            style = "green" if data.status is RunStatus.DONE else "red"
            extra = f": {data.error}" if data.error else ""
            self.console.print(f"[bold {style}]{data.status.value}[/]{extra}")
        elif data.status is RunStatus.WAITING_APPROVAL:
            self.console.print("[magenta]waiting for approval[/]")


def _short(arguments: str, limit: int = 300) -> str:
    try:
        text = json.dumps(json.loads(arguments), ensure_ascii=False)
    except ValueError:
        text = arguments
    return text if len(text) <= limit else text[: limit - 1] + "…"
