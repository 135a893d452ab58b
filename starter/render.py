"""How `agentrun run` and `agentrun follow` show a run's events: live text, tool calls, results.

At a terminal the text of the current turn is a live region, so a stream.reset (a retried
model attempt) wipes that turn's partial text off the screen; piped, text is printed as it
comes and a reset is a marked line."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text


class Renderer:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.live_capable = console.is_terminal
        self._live: Live | None = None
        self._text = ""
        self._plain_open = False

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
        if self.live_capable:
            self._text = ""
            if self._live is not None:
                self._live.update(Text(""), refresh=True)
        else:
            self._end_plain()
            self.console.print(
                f"[yellow]↺ model attempt {attempt} for turn {turn}: "
                "the partial text above is dropped[/]"
            )
        self._text = ""

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

    # -- events --------------------------------------------------------------------------

    def event(self, type_: str, data: dict[str, Any]) -> None:
        if type_ == "message.delta":
            self.delta(data["text"])
            return
        if type_ == "stream.reset":
            self.reset(data["turn"], data["attempt"])
            return
        if type_ == "message.completed":
            self.end_text()
            return
        self.end_text()
        if type_ == "tool.call":
            self.console.print(f"[cyan]→ {data['name']}[/] {_short(data['arguments'])}")
        elif type_ == "tool.approval_requested":
            self.console.print(
                f"[magenta]? approval needed[/] for [bold]{data['name']}[/] "
                f"{_short(data['arguments'])}  (tool call {data['tool_call_id']})"
            )
        elif type_ == "tool.result_requested":
            self.console.print(
                f"[magenta]? waiting for the client's result[/] of {data['name']} "
                f"(tool call {data['tool_call_id']})"
            )
        elif type_ == "tool.decided":
            by = data.get("decided_by") or "?"
            reason = f": {data['reason']}" if data.get("reason") else ""
            self.console.print(f"[magenta]• {data['decision']}[/] by {by}{reason}")
        elif type_ == "tool.result":
            mark = "[red]✗[/]" if data.get("is_error") else "[green]✓[/]"
            lines = str(data.get("result", "")).splitlines() or [""]
            more = f" … (+{len(lines) - 6} lines)" if len(lines) > 6 else ""
            self.console.print(f"{mark} {data['name']}: " + "\n    ".join(lines[:6]) + more)
        elif type_ == "error":
            self.console.print(f"[yellow]! {data.get('message')}[/]")
        elif type_ == "tool.decision_invalid":
            self.console.print(f"[yellow]! decision not applied: {data.get('error')}[/]")
        elif type_ == "run.status":
            status = data["status"]
            if status in ("DONE", "FAILED", "CANCELED"):
                style = "green" if status == "DONE" else "red"
                extra = f": {data['error']}" if data.get("error") else ""
                self.console.print(f"[bold {style}]{status}[/]{extra}")
            elif status == "WAITING_APPROVAL":
                self.console.print("[magenta]waiting for approval[/]")


def _short(arguments: str, limit: int = 300) -> str:
    try:
        text = json.dumps(json.loads(arguments), ensure_ascii=False)
    except ValueError:
        text = arguments
    return text if len(text) <= limit else text[: limit - 1] + "…"
