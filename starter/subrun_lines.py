"""The lines `agentrun run` and `agentrun follow` print for a run's sub-runs (README Sub-agents)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.markup import escape

from agentrun.protocol.events import SubRunFinishedData, SubRunStartedData, SubRunWaitingData

__all__ = ["SUBRUN_LINES"]


# Ids, names and arguments come from a model: escaped, never read as markup.


def _started(d: SubRunStartedData) -> str:
    return (
        f"[cyan]↳ sub-agent {escape(d.agent)}[/] started run {escape(d.subrun_id)} "
        f"(tool call {escape(d.tool_call_id)})"
    )


def _waiting(d: SubRunWaitingData) -> str:
    run, call = escape(d.subrun_id), escape(d.tool_call_id)
    return (
        f"[magenta]? waiting on sub-run {run}[/] for approval of [bold]{escape(d.name)}[/] "
        f"{escape(d.arguments[:200])}  (agentrun approve {run} {call})"
    )


def _finished(d: SubRunFinishedData) -> str:
    why = f": {escape(d.error)}" if d.error else ""
    return f"[cyan]↲ sub-agent {escape(d.agent)}[/] run {escape(d.subrun_id)} ended {d.status}{why}"


SUBRUN_LINES: dict[type, Callable[[Any], str]] = {
    SubRunStartedData: _started,
    SubRunWaitingData: _waiting,
    SubRunFinishedData: _finished,
}
