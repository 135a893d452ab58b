"""The tool schemas a model turn sends: one place that says how a tool is offered to the model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from activities.tools import ToolRegistry
from agentrun.contracts import AgentConfig
from agentrun.contracts.subagents import delegate_schema

__all__ = ["tool_schemas"]


def tool_schemas(
    registry: ToolRegistry,
    names: list[str],
    config: AgentConfig,
    mcp: Mapping[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The OpenAI function schemas of the tools a turn offers: the run's client-side tools
    from its config, its MCP tools from the list recorded at open (`mcp`), the rest from the
    worker's registry."""
    client = {c.name: c for c in config.client_tools}
    schemas = []
    for name in names:
        delegate = delegate_schema(config, name)
        if delegate is not None:
            schemas.append(delegate)
        elif name in client:
            c = client[name]
            schemas.append(
                {
                    "type": "function",
                    "function": {
                        "name": c.name,
                        "description": c.description,
                        "parameters": c.parameters,
                    },
                }
            )
        elif mcp and name in mcp:
            schemas.append(mcp[name])
        else:
            schemas.extend(t.openai_schema() for t in registry.select([name]))
    return schemas
