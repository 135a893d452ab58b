"""Compatibility: the Python API moved to agentrun.client. These names stay importable from
here for scripts written against earlier versions; new code imports agentrun.client."""

from __future__ import annotations

from agentrun.client import (
    RunEnded,
    cancel_run,
    decide,
    follow,
    new_id,
    run_status,
    start_run,
    submit_tool_result,
)

# The error's earlier name.
RunAlreadyEndedError = RunEnded

__all__ = [
    "RunAlreadyEndedError",
    "cancel_run",
    "decide",
    "follow",
    "new_id",
    "run_status",
    "start_run",
    "submit_tool_result",
]
