"""Sub-agents at run open: the `delegate_to_<name>` tools a run offers (approval resolved as the
run's preset and overrides say), each sub-agent's own config checked against this worker's
policy (so a wrong one refuses the parent at open, not a child later), and the folder the
run's sub-runs share with it. Pure, apart from resolving paths."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from activities.policy import InvalidConfig, preset_approval, resolve_policy, workspace_for
from agentrun.contracts import (
    RESULT_CAP,
    AgentConfig,
    ToolApproval,
    ToolInfo,
    ToolKind,
)
from agentrun.contracts.subagents import (
    DELEGATE_PARAMETERS,
    child_config,
    delegate_name,
    strip_delegates,
)
from agentrun.store.engine import NotFoundError

if TYPE_CHECKING:
    from activities.tools import ToolRegistry
    from agentrun.store import Repository

__all__ = ["delegate_tools", "run_tools", "subrun_answer", "subruns_workspace"]

# A delegate call is never run by execute_tool: these only fill ToolInfo's fields.
_DELEGATE_TIMEOUT_S = 60.0


def _approval(config: AgentConfig, tool: str) -> ToolApproval:
    override = config.approval_overrides.get(tool)
    if override is not None:
        return override
    # Runs unasked by default; not read-only (allow_safe asks, as for every other tool).
    return preset_approval(config, tool, ToolApproval.AUTO, read_only=False)


def delegate_tools(
    registry: ToolRegistry, config: AgentConfig, floors: Mapping[str, str]
) -> list[ToolInfo]:
    """One SUBAGENT tool per sub-agent of the config. Raises InvalidConfig when a sub-agent's
    own config would be refused at its open (unknown tools, approval below the floor)."""
    infos = []
    for name in config.subagents or {}:
        child = child_config(config, name, None, child_depth=1)
        try:
            resolve_policy(registry, strip_delegates(child), floors)
        except ValueError as exc:
            raise InvalidConfig(f"sub-agent {name!r}: {exc}") from None
        tool = delegate_name(name)
        infos.append(
            ToolInfo(
                name=tool,
                approval=_approval(config, tool),
                timeout_s=_DELEGATE_TIMEOUT_S,
                max_attempts=1,
                kind=ToolKind.SUBAGENT,
                parameters=DELEGATE_PARAMETERS,
            )
        )
    return infos


def run_tools(
    registry: ToolRegistry, config: AgentConfig, floors: Mapping[str, str]
) -> list[ToolInfo]:
    """A run's tools: the worker's and client tools (activities.policy), then its sub-agents'."""
    infos = resolve_policy(registry, strip_delegates(config), floors).infos()
    return infos + delegate_tools(registry, config, floors)


def subruns_workspace(config: AgentConfig, root: Path, session_id: str) -> str | None:
    """The folder a run with sub-agents works in (its sub-runs work there too), else None."""
    if not config.subagents:
        return None
    return str(workspace_for(config.workspace, root, session_id))


async def subrun_answer(repo: Repository, run_id: str, child_id: str, fallback: str) -> str:
    """The whole final text of `child_id`, a child of `run_id` (the workflow only carries its
    first characters), cut to RESULT_CAP; `fallback` when it is not that run's child."""
    try:
        child = await repo.get_run(child_id)
    except NotFoundError:
        return fallback
    if child.parent_run_id != run_id or child.final_text is None:
        return fallback
    text = child.final_text
    if len(text) > RESULT_CAP:
        text = text[:RESULT_CAP] + f"\n[answer truncated at {RESULT_CAP} characters]"
    return text
