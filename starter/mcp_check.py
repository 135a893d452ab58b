"""The worker's MCP server declarations checked by the commands that start a worker (dev,
demo), before they start anything: a bad file is a usage error naming file, key and problem."""

from __future__ import annotations

from agentrun.mcp.config import McpConfigError, McpServerConfig, servers_of
from agentrun.settings import Settings
from starter.exits import EXIT_USAGE, CliError

__all__ = ["mcp_servers_or_exit"]


def mcp_servers_or_exit(settings: Settings) -> dict[str, McpServerConfig]:
    try:
        return servers_of(settings)
    except McpConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
