"""Sub-agents' names (README Sub-agents): the rule for a name and what a config's sub-agents
may not do with names. Apart from agentrun.contracts.run, which checks a config with it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentrun.contracts.run import AgentConfig

__all__ = ["DELEGATE_PREFIX", "SUBAGENT_NAME_PATTERN", "subagent_problems"]

# A sub-agent's name: its tool `delegate_to_<name>` stays within what model APIs accept (64).
SUBAGENT_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,48}$"
DELEGATE_PREFIX = "delegate_to_"


def subagent_problems(config: AgentConfig) -> list[str]:
    """What is wrong with a config's sub-agents: names, clashes, references."""
    subs = config.subagents or {}
    problems = []
    for name, spec in subs.items():
        if not re.fullmatch(SUBAGENT_NAME_PATTERN, name):
            problems.append(
                f"sub-agent name {name!r} must be 1-48 letters, digits, '_' or '-' "
                f"(its tool is {DELEGATE_PREFIX}<name>)"
            )
        unknown = [n for n in spec.subagents if n not in subs]
        if unknown:
            problems.append(f"sub-agent {name!r} names unknown sub-agent(s): {', '.join(unknown)}")
    taken = set(config.tools or ()) | {c.name for c in config.client_tools}
    clash = sorted(DELEGATE_PREFIX + n for n in subs if DELEGATE_PREFIX + n in taken)
    if clash:
        problems.append(f"tool name(s) {', '.join(clash)} clash with sub-agents' tools")
    return problems
