"""Tool policy: which tools a run may use, which of them ask a person first, where they work.

Pure rules, no I/O beyond resolving paths. The worker's settings set the floor (each tool's
approval at least this strict, workspaces only under this root); a run's config chooses among
what the floor allows and can only make it stricter. The same rules run when a run is opened
(prepare_run refuses a config that asks for more) and again before each tool runs
(execute_tool refuses a call the run did not enable), so a workflow that asks for the wrong
thing still cannot get it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agentrun.contracts import AgentConfig, ApprovalPreset, ToolApproval, ToolInfo, ToolKind

if TYPE_CHECKING:
    from activities.tools import Tool, ToolRegistry

__all__ = [
    "InvalidConfig",
    "ToolPolicy",
    "check_workspace",
    "resolve_policy",
    "session_folder",
    "workspace_for",
]

FLOOR_SETTING = "AGENTRUN_APPROVAL_FLOOR"
ROOT_SETTING = "AGENTRUN_WORKSPACE_ROOT"
_STRICTNESS: dict[ToolApproval, int] = {ToolApproval.AUTO: 0, ToolApproval.NEEDS_APPROVAL: 1}


class InvalidConfig(ValueError):
    """A run's config asks for something the worker's policy does not allow."""


@dataclass(frozen=True)
class ToolPolicy:
    """The tools of one run with their approval resolved; client tools included."""

    tools: tuple[ToolInfo, ...]

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tools]

    @property
    def server_names(self) -> list[str]:
        return [t.name for t in self.tools if t.kind == ToolKind.SERVER]

    def info(self, name: str) -> ToolInfo | None:
        return next((t for t in self.tools if t.name == name), None)

    def enabled(self, name: str) -> bool:
        """A server-side tool this run offers (client tools never run on the worker)."""
        info = self.info(name)
        return info is not None and info.kind == ToolKind.SERVER

    def needs_approval(self, name: str) -> bool:
        info = self.info(name)
        return info is None or info.approval == ToolApproval.NEEDS_APPROVAL

    def infos(self) -> list[ToolInfo]:
        return [t.model_copy() for t in self.tools]


def floor_of(tool: Tool, floors: Mapping[str, str]) -> ToolApproval:
    """The worker's floor for a tool: the setting when it names the tool, else its default."""
    return ToolApproval(floors.get(tool.name, tool.approval))


def preset_approval(
    config: AgentConfig, name: str, default: ToolApproval, read_only: bool
) -> ToolApproval:
    """What the run's approval preset asks of a tool (before its overrides and the floor):
    one table for built-in, MCP and delegate tools, each with its own default and safety."""
    auto, ask = ToolApproval.AUTO, ToolApproval.NEEDS_APPROVAL
    table: dict[ApprovalPreset, ToolApproval] = {
        ApprovalPreset.TOOL_DEFAULT: default,
        ApprovalPreset.REQUIRE_ALL: ask,
        ApprovalPreset.ALLOW_SAFE: auto if read_only else ask,
        ApprovalPreset.ALLOW_LISTED: auto if name in config.approval_allow else ask,
        ApprovalPreset.SKIP_ALL: auto,
    }
    return table[config.approval]


def _preset(tool: Tool, config: AgentConfig) -> ToolApproval:
    return preset_approval(config, tool.name, tool.approval, tool.read_only)


def resolve_policy(
    registry: ToolRegistry,
    config: AgentConfig,
    floors: Mapping[str, str] | None = None,
    *,
    strict: bool = True,
) -> ToolPolicy:
    """The run's tools: its preset, then its overrides, never below the worker's floor.

    strict (at run open): a config that names an unknown tool, or explicitly asks a tool to run
    without approval where the floor says it needs one, raises InvalidConfig. Not strict
    (before a tool runs, for a run opened earlier): unknown names are dropped and a looser
    choice is raised to the floor, so an old config can never loosen today's policy.
    """
    floors = floors or {}
    if strict:
        tools = registry.select(config.tools)
    else:
        wanted = registry.names if config.tools is None else config.tools
        tools = [t for n in wanted if (t := registry.get(n)) is not None]
    names = {t.name for t in tools}
    if strict:
        known = names | {c.name for c in config.client_tools}
        clash = [c.name for c in config.client_tools if c.name in names]
        if clash:
            raise InvalidConfig(f"client tool(s) {', '.join(clash)} clash with built-in tool names")
        # Names of the run's MCP servers' tools are checked when those are listed (their
        # list is not known yet): activities/mcp_tools.py.
        mcp = tuple(f"{c.server}__" for c in config.mcp_servers or ())
        named = set(config.approval_overrides) | set(config.approval_allow)
        unknown = sorted(n for n in named - known if not n.startswith(mcp) or not mcp)
        if unknown:
            raise InvalidConfig(f"approval settings name unknown tool(s): {', '.join(unknown)}")
    infos: list[ToolInfo] = []
    loosened: list[str] = []
    for tool in tools:
        floor = floor_of(tool, floors)
        override = config.approval_overrides.get(tool.name)
        approval = override or _preset(tool, config)
        if _STRICTNESS[approval] < _STRICTNESS[floor]:
            # The default preset follows the floor quietly; anything the caller chose is a
            # request to loosen, refused so nobody believes a tool runs unasked when it won't.
            explicit = override is not None or config.approval != ApprovalPreset.TOOL_DEFAULT
            if explicit:
                how = (
                    f"approval_overrides[{tool.name!r}]='auto'"
                    if override is not None
                    else f"approval={config.approval!r}"
                )
                loosened.append(f"{how} would run {tool.name} without approval")
            approval = floor
        info = tool.info()
        info.approval = approval
        info.parameters = tool.openai_schema()["function"]["parameters"]
        infos.append(info)
    if strict and loosened:
        raise InvalidConfig(
            "; ".join(loosened)
            + f", but this worker's floor ({FLOOR_SETTING}) requires approval; a run's config "
            "can only make approval stricter (enable only the tools you need with `tools`, or "
            "ask the operator to lower the floor)"
        )
    for client in config.client_tools:
        infos.append(
            ToolInfo(
                name=client.name,
                kind=ToolKind.CLIENT,
                approval=config.approval_overrides.get(client.name, ToolApproval.AUTO),
                parameters=client.parameters,
            )
        )
    return ToolPolicy(tuple(infos))


def check_workspace(workspace: str | None, root: Path) -> None:
    """Refuse a workspace outside the worker's root (raises InvalidConfig)."""
    if workspace is None:
        return
    root = root.resolve()
    path = Path(workspace)
    if not path.is_absolute():
        raise InvalidConfig(f"workspace {workspace!r} must be an absolute path under {root}")
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise InvalidConfig(
            f"workspace {workspace!r} is outside this worker's workspace root {root} "
            f"({ROOT_SETTING}); leave it unset for the session's own folder, or pick a folder "
            "under the root"
        )


def session_folder(session_id: str) -> str:
    """A path component for a session id: safe characters kept, plus a short hash so two ids
    that differ only in the characters replaced never share a folder."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", session_id)[:80].strip(".") or "session"
    digest = hashlib.sha256(session_id.encode()).hexdigest()[:12]
    return f"{safe}-{digest}"


def workspace_for(workspace: str | None, root: Path, session_id: str) -> Path:
    """The folder a run's tools work in: the configured one (checked against the root), or the
    session's own folder under the root. Raises InvalidConfig."""
    root = root.resolve()
    if workspace is None:
        return root / "sessions" / session_folder(session_id)
    check_workspace(workspace, root)
    return Path(workspace).resolve()
