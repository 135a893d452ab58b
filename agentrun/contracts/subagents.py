"""Sub-agents (README Sub-agents): the pure rules both sides share. A run's config names
sub-agents; the model sees one tool `delegate_to_<name>` each, taking {"task": text}; a call runs
the task as a child run (workflows/subagents.py) whose id, session and config are derived here,
deterministically, from the parent run, the sub-agent and the tool call."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pydantic import BaseModel, Field

from agentrun.contracts.people import PendingCall
from agentrun.contracts.run import ID_PATTERN, MAX_PROMPT_CHARS, AgentConfig, Usage
from agentrun.contracts.subagent_names import DELEGATE_PREFIX, subagent_problems

__all__ = [
    "DELEGATE_PARAMETERS",
    "DELEGATE_PREFIX",
    "SubRunWaits",
    "agent_of",
    "child_config",
    "child_run_id",
    "child_within_budget",
    "delegate_name",
    "delegate_schema",
    "descends_from",
    "parse_task",
    "strip_delegates",
    "subagent_problems",
]

DELEGATE_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "task": {
            "type": "string",
            "description": "The task, complete in itself: the sub-agent sees nothing else.",
        }
    },
    "required": ["task"],
    "additionalProperties": False,
}
# A tool call id kept as it is in a child's run id; any other is hashed.
_PLAIN_CALL_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_ID = re.compile(ID_PATTERN)


class SubRunWaits(BaseModel):
    """Payload of the signal subrun_waits: a child tells its parent which of its calls (or of
    its own children's, forwarded) wait for approval now; an empty `calls` means none."""

    run_id: str = Field(description="The run whose calls wait.")
    via: str = Field(description="The parent's child that sent or forwarded this.")
    agent: str = ""
    calls: list[PendingCall] = Field(default_factory=list)


def delegate_name(agent: str) -> str:
    return DELEGATE_PREFIX + agent


def agent_of(tool_name: str) -> str:
    return tool_name.removeprefix(DELEGATE_PREFIX)


def strip_delegates(config: AgentConfig) -> AgentConfig:
    """The config without its sub-agents' tool names in the approval settings: the tool policy
    (activities.policy) knows worker and client tools only."""
    if not config.subagents:
        return config
    names = {delegate_name(n) for n in config.subagents}
    return config.model_copy(
        update={
            "approval_allow": [n for n in config.approval_allow if n not in names],
            "approval_overrides": {
                k: v for k, v in config.approval_overrides.items() if k not in names
            },
        }
    )


def delegate_schema(config: AgentConfig, tool_name: str) -> dict[str, Any] | None:
    """The function schema the model sees for `delegate_to_<name>`, or None if not one."""
    spec = (config.subagents or {}).get(agent_of(tool_name))
    if not tool_name.startswith(DELEGATE_PREFIX) or spec is None:
        return None
    about = spec.description or "works on the task on its own"
    return {
        "type": "function",
        "function": {
            "name": tool_name,
            "description": f"Delegate a task to the sub-agent {agent_of(tool_name)} ({about}); "
            "it answers with its final text.",
            "parameters": DELEGATE_PARAMETERS,
        },
    }


def parse_task(arguments: str) -> tuple[str | None, str | None]:
    """(task, None) from a delegate call's arguments, or (None, why not)."""
    try:
        args = json.loads(arguments or "{}")
    except ValueError as exc:
        return None, f"the arguments are not valid JSON ({exc})"
    task = args.get("task") if isinstance(args, dict) else None
    if not isinstance(task, str) or not task.strip():
        return None, 'the arguments must be {"task": "<a non-empty text>"}'
    if extra := sorted(set(args) - {"task"}):
        return None, f"unknown argument(s): {', '.join(extra)}"
    if len(task) > MAX_PROMPT_CHARS:
        return None, f"the task has {len(task)} characters; the limit is {MAX_PROMPT_CHARS}"
    return task, None


def child_run_id(parent_run_id: str, agent: str, tool_call_id: str) -> str:
    """The child run's id (also its session's): `<parent>.<agent>.<call>`, or with a hash of
    the three when that is too long or the call id has other characters. Deterministic, so a
    replayed or retried start finds the same child."""
    plain = f"{parent_run_id}.{agent}.{tool_call_id}"
    if _PLAIN_CALL_ID.match(tool_call_id) and _ID.match(plain):
        return plain
    digest = hashlib.sha256(f"{parent_run_id}\n{agent}\n{tool_call_id}".encode()).hexdigest()
    return f"{parent_run_id[:140]}.{agent[:16]}.h{digest[:32]}"


def descends_from(run_id: str, ancestor: str) -> bool:
    """Whether `run_id` is `ancestor` or a run started under it: child_run_id puts the parent's
    id (its first 140 characters when hashed) and a dot before the rest, at every level."""
    return run_id == ancestor or run_id.startswith(ancestor[:140] + ".")


def _reachable(config: AgentConfig, names: list[str]) -> dict[str, Any]:
    subs = config.subagents or {}
    found: dict[str, Any] = {}
    todo = [n for n in names if n in subs]
    while todo:
        name = todo.pop()
        if name not in found:
            found[name] = subs[name]
            todo.extend(n for n in subs[name].subagents if n in subs)
    return found


def child_config(
    parent: AgentConfig, agent: str, workspace: str | None, child_depth: int
) -> AgentConfig:
    """The child run's config: the sub-agent's settings over the parent's (model, limits and
    timeouts, approval, webhooks inherited); no client tools; the sub-agents it may call only
    while `child_depth` is below max_depth."""
    spec = (parent.subagents or {})[agent]
    tools = spec.tools if spec.tools is not None else parent.tools
    nested = _reachable(parent, spec.subagents) if child_depth < parent.max_depth else {}
    own = set(tools) if tools is not None else None
    own_delegates = {delegate_name(n) for n in nested}
    parents_only = {c.name for c in parent.client_tools} | {
        delegate_name(n) for n in parent.subagents or {}
    }

    servers = spec.mcp_servers if spec.mcp_servers is not None else parent.mcp_servers
    mcp = tuple(f"{c.server}__" for c in servers or ())

    def keeps(name: str) -> bool:
        if name in own_delegates or (mcp and name.startswith(mcp)):
            return True
        return name not in parents_only and (own is None or name in own)

    # The sub-agent's own approval settings as given (the child's open refuses a wrong one);
    # the parent's only for the tools the child has.
    allow = spec.approval_allow
    if allow is None:
        allow = [n for n in parent.approval_allow if keeps(n)]
    overrides = spec.approval_overrides
    if overrides is None:
        overrides = {k: v for k, v in parent.approval_overrides.items() if keeps(k)}
    return parent.model_copy(
        update={
            "model": spec.model or parent.model,
            "system_prompt": spec.system_prompt,
            "tools": tools,
            "max_turns": spec.max_turns or parent.max_turns,
            "max_tool_calls": (
                spec.max_tool_calls if spec.max_tool_calls is not None else parent.max_tool_calls
            ),
            "workspace": workspace or parent.workspace,
            "approval": spec.approval or parent.approval,
            "approval_allow": allow,
            "approval_overrides": overrides,
            "client_tools": [],
            "mcp_servers": servers,
            "subagents": nested or None,
        }
    )


def child_within_budget(
    child: AgentConfig, parent: AgentConfig, used: Usage
) -> tuple[AgentConfig | None, str]:
    """The child's config with the run budgets (max_cost_usd, max_total_tokens) cut to what is
    left of the parent's after `used` (children running at once share it: the parent checks
    its own after each batch); or None and why, when nothing is left."""
    update: dict[str, Any] = {}
    if parent.max_cost_usd is not None:
        left = parent.max_cost_usd - (used.cost_usd or 0)
        if left <= 0:
            return None, f"the run's budget max_cost_usd {parent.max_cost_usd} is spent"
        update["max_cost_usd"] = left
    if parent.max_total_tokens is not None:
        left_tokens = parent.max_total_tokens - used.total_tokens
        if left_tokens <= 0:
            return None, f"the run's budget max_total_tokens {parent.max_total_tokens} is spent"
        update["max_total_tokens"] = left_tokens
    return (child.model_copy(update=update) if update else child), ""
