"""`agentrun tools`: the built-in tools and the tools of the declared MCP servers with their
approval policies; `agentrun tools check`: connect to each declared MCP server and say what it
offers or why it failed (exit 1 when any failed). MCP servers are declared where the workers
read them (AGENTRUN_CONFIG_FILE / ./agentrun.toml, AGENTRUN_MCP_SERVERS), so run it with a
worker's settings."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from activities.mcp_tools import mcp_approval, tool_name
from activities.policy import floor_of
from activities.tools import default_registry
from agentrun.contracts import AgentConfig, ApprovalPreset
from agentrun.mcp.config import McpConfigError, McpServerConfig
from agentrun.mcp.pool import ListedTool, McpPool, McpServerError
from agentrun.settings import Settings
from starter.connect import settings_or_exit
from starter.exits import EXIT_FAILED, EXIT_OK
from starter.mcp_check import mcp_servers_or_exit
from starter.output import console, print_json

DEFAULT = AgentConfig()
ALLOW_SAFE = AgentConfig(approval=ApprovalPreset.ALLOW_SAFE)


def _builtins(settings: Settings) -> list[dict[str, Any]]:
    return [
        {
            "name": t.name,
            "source": "built-in",
            "approval": str(floor_of(t, settings.approval_floor)),
            "approval_allow_safe": "auto"
            if t.read_only and floor_of(t, settings.approval_floor) == "auto"
            else "needs_approval",
            "read_only": t.read_only,
            "timeout_s": t.timeout_s,
            "max_attempts": t.max_attempts,
            "description": t.description,
        }
        for t in (default_registry().get(n) for n in default_registry().names)
        if t is not None
    ]


def _policy(name: str, tool: ListedTool, server: McpServerConfig, settings: Settings) -> str:
    try:
        return str(
            mcp_approval(
                name, tool.annotations, ALLOW_SAFE, settings.approval_floor, server.approval
            )
        )
    except ValueError:
        return "needs_approval"


def _mcp_tool(server: McpServerConfig, tool: ListedTool, settings: Settings) -> dict[str, Any]:
    name = tool_name(server.name, tool.name)
    floors = settings.approval_floor
    return {
        "name": name,
        "source": f"mcp:{server.name}",
        "approval": str(mcp_approval(name, tool.annotations, DEFAULT, floors, server.approval)),
        "approval_allow_safe": _policy(name, tool, server, settings),
        "read_only": tool.annotations.get("readOnlyHint") is True,
        "annotations": tool.annotations,
        "timeout_s": server.timeout_s,
        "max_attempts": server.max_attempts,
        "description": tool.description,
    }


async def _probe(settings: Settings) -> list[dict[str, Any]]:
    """Each declared server: what it offers, or why it could not be reached."""
    servers = mcp_servers_or_exit(settings)
    pool = McpPool(servers)
    found = []
    try:
        for name, server in sorted(servers.items()):
            entry: dict[str, Any] = {
                "server": name,
                "transport": server.transport,
                "target": server.describe(),
            }
            try:
                listed = await pool.list_tools(name)
                entry["ok"] = True
                entry["tools"] = [_mcp_tool(server, t, settings) for t in listed]
            except (McpServerError, McpConfigError) as exc:
                entry["ok"] = False
                entry["error"] = str(exc)
            found.append(entry)
    finally:
        await pool.close()
    return found


async def cmd_tools(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    servers = await _probe(settings)
    tools = _builtins(settings) + [t for s in servers for t in s.get("tools", [])]
    failed = [s for s in servers if not s["ok"]]
    if args.json:
        print_json({"tools": tools, "servers": servers})
        return EXIT_OK
    table = Table("tool", "source", "approval", "under allow_safe", "timeout", "attempts")
    for t in tools:
        table.add_row(
            t["name"],
            t["source"],
            t["approval"],
            t["approval_allow_safe"],
            f"{t['timeout_s']:g}s",
            str(t["max_attempts"]),
        )
    console.print(table)
    for s in failed:
        console.print(f"MCP server {s['server']!r} could not be listed: {s['error']}", markup=False)
    return EXIT_OK


async def cmd_tools_check(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    servers = await _probe(settings)
    if args.json:
        print_json({"servers": servers})
    elif not servers:
        console.print(
            "no MCP servers declared (AGENTRUN_CONFIG_FILE, ./agentrun.toml, AGENTRUN_MCP_SERVERS)"
        )
    for s in [] if args.json else servers:
        head = f"{s['server']} ({s['transport']}: {s['target']})"
        if s["ok"]:
            names = ", ".join(t["name"] for t in s["tools"]) or "(no tools)"
            console.print(f"ok      {head}: {len(s['tools'])} tools: {names}", markup=False)
        else:
            console.print(f"FAILED  {head}: {s['error']}", markup=False)
    return EXIT_FAILED if any(not s["ok"] for s in servers) else EXIT_OK
