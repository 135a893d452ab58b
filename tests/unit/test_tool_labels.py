"""tool_label: the bounded `tool` label of agentrun_tool_calls_total."""

from __future__ import annotations

from activities.tools import default_registry
from agentrun.telemetry.genai import tool_label


def test_known_tools_keep_their_names_and_others_are_other() -> None:
    registry = default_registry()
    assert tool_label(registry, "calculator") == "calculator"
    assert tool_label(registry, "notes__lookup") == "other"  # not recorded for the run
    assert tool_label(registry, "notes__lookup", mcp_recorded=True) == "notes__lookup"
    assert tool_label(registry, "rm -rf /") == "other"
