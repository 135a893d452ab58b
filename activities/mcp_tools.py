"""Tools of MCP servers (README "MCP tools").

agentrun.list_mcp_tools runs once when a run opens, for a run whose config names MCP servers:
it lists their tools, names them <server>__<tool>, resolves their approval and records the
list (table run_mcp_tools); the workflow and every later step use that record, so a server
that changes its tools mid-run changes nothing for the run. execute_tool hands a call of a
recorded MCP tool to McpTools.execute: the same claim, approval check, heartbeats, timeout and
record as a built-in tool, with the tool_call_id sent to the server as the idempotency key in
the request's _meta.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import jsonschema
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.policy import preset_approval
from activities.sandbox import Redactor
from activities.tool_exec import (
    APPROVED,
    HEARTBEAT_EVERY_S,
    _as_result,
    _heartbeat_every,
    _tolerant_config,
    storable,
)
from activities.tools import ToolRegistry
from agentrun.contracts import (
    RESULT_CAP,
    AgentConfig,
    ExecuteToolInput,
    ListMcpToolsInput,
    McpServerChoice,
    ToolApproval,
    ToolInfo,
    ToolKind,
    ToolResult,
)
from agentrun.db.models import RunMcpTool, ToolCallStatus
from agentrun.mcp.config import McpServerConfig, secret_names
from agentrun.mcp.pool import ListedTool, McpPool, McpServerError
from agentrun.protocol.names import Activity, ErrorType
from agentrun.store import Repository
from agentrun.store import mcp_tools as store

__all__ = ["MCP_SOURCE", "McpTools", "mcp_approval", "mcp_schemas", "tool_name"]

MCP_SOURCE = "mcp"
SEPARATOR = "__"
# What model APIs accept as a function name (OpenAI, Anthropic, Gemini agree on this).
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
RUN_CACHE_RUNS = 1024
# The recorded list rides in the run's history (OpenedRun.tools, the schemas edits are checked
# against) and in every model request: bounded well under Temporal's 2 MB payload limit.
MAX_LIST_CHARS = 500_000
Record = Callable[[ExecuteToolInput, str, bool], Awaitable[ToolResult]]

_schemas: OrderedDict[str, dict[str, dict[str, Any]]] = OrderedDict()


def tool_name(server: str, tool: str) -> str:
    return f"{server}{SEPARATOR}{tool}"


def _refuse(message: str) -> ApplicationError:
    return ApplicationError(message, type=ErrorType.INVALID_CONFIG, non_retryable=True)


def _read_only(annotations: Mapping[str, Any]) -> bool:
    return (
        annotations.get("readOnlyHint") is True and annotations.get("destructiveHint") is not True
    )


def mcp_approval(
    name: str,
    annotations: Mapping[str, Any],
    config: AgentConfig,
    floors: Mapping[str, str],
    server_floor: str | None = None,
) -> ToolApproval:
    """An MCP tool's approval: every MCP tool asks by default; under allow_safe one the server
    marks readOnlyHint (and not destructiveHint) runs unasked. The floor (the worker's
    AGENTRUN_APPROVAL_FLOOR for this name, else the server's `approval` in the config file,
    else auto for read-only tools and needs_approval for the rest) can only be tightened by
    a run; asking for less raises InvalidConfig as for built-in tools."""
    auto, ask = ToolApproval.AUTO, ToolApproval.NEEDS_APPROVAL
    read_only = _read_only(annotations)
    preset = preset_approval(config, name, ask, read_only)
    override = config.approval_overrides.get(name)
    approval = override or preset
    floor = ToolApproval(floors.get(name) or server_floor or (auto if read_only else ask))
    if approval == auto and floor == ask:
        how = (
            f"approval_overrides[{name!r}]='auto'" if override else f"approval={config.approval!r}"
        )
        raise InvalidMcpConfig(
            f"{how} would run {name} without approval, but it needs approval on this worker "
            "(MCP tools that are not read-only ask unless the operator lowers their floor "
            "with AGENTRUN_APPROVAL_FLOOR or the server's `approval` in the config file)"
        )
    return approval


class InvalidMcpConfig(ValueError):
    """A run's MCP choice this worker cannot honour."""


def _info(row: RunMcpTool) -> ToolInfo:
    return ToolInfo(
        name=row.name,
        approval=ToolApproval(row.approval),
        timeout_s=row.timeout_s,
        max_attempts=row.max_attempts,
        kind=ToolKind.SERVER,
        parameters=row.input_schema,
        source=MCP_SOURCE,
        server=row.server,
        server_tool=row.tool,
        annotations=row.annotations,
    )


def _openai_schema(row: RunMcpTool) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": row.name,
            "description": row.description[:4_000],
            "parameters": row.input_schema or {"type": "object", "properties": {}},
        },
    }


async def mcp_schemas(repo: Repository, run_id: str) -> dict[str, dict[str, Any]]:
    """The OpenAI function schemas of the run's recorded MCP tools, by name (kept per worker:
    a run's record never changes once written)."""
    cached = _schemas.get(run_id)
    if cached is not None:
        _schemas.move_to_end(run_id)
        return cached
    async with repo.session() as db:
        rows = await store.read(db, run_id)
    found = {r.name: _openai_schema(r) for r in rows}
    if found:
        _schemas[run_id] = found
        while len(_schemas) > RUN_CACHE_RUNS:
            _schemas.popitem(last=False)
    return found


def _result_text(result: CallToolResult) -> str:
    parts: list[str] = []
    for item in result.content:
        text = getattr(item, "text", None)
        if isinstance(text, str):
            parts.append(text)
        else:
            parts.append(json.dumps(item.model_dump(mode="json", exclude_none=True)))
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    text = "\n".join(parts)
    if len(text) > RESULT_CAP:
        text = text[:RESULT_CAP] + f"\n[result truncated at {RESULT_CAP} characters]"
    return text


class McpTools:
    """The worker's MCP side: the list activity, and the call path of execute_tool."""

    def __init__(
        self, repo: Repository, pool: McpPool, registry: ToolRegistry, floors: Mapping[str, str]
    ) -> None:
        self.repo = repo
        self.pool = pool
        self.registry = registry
        self.floors = dict(floors)
        # The values behind the servers' env: references never reach the record or the model.
        self.redact = Redactor(
            {os.environ[n]: n for n in secret_names(pool.servers) if os.environ.get(n)}
        )
        self._runs: OrderedDict[str, dict[str, RunMcpTool]] = OrderedDict()

    @activity.defn(name=Activity.LIST_MCP_TOOLS)
    async def list_mcp_tools(self, inp: ListMcpToolsInput) -> list[ToolInfo]:
        async with self.repo.session() as db:
            recorded = await store.read(db, inp.run_id)
        if recorded:  # listed before (a retry): the run keeps its first list
            return [_info(r) for r in recorded]
        run = await self.repo.get_run(inp.run_id)
        config = inp.config or _tolerant_config(run.config)
        rows: list[dict[str, Any]] = []
        for choice in config.mcp_servers or []:
            server = self._server(choice.server)
            if server.tenants is not None:
                tenant = run.tenant
                if tenant not in server.tenants:
                    raise _refuse(
                        f"MCP server {choice.server!r} is not offered to tenant {tenant!r}"
                    )
            activity.heartbeat(f"listing {choice.server}")
            try:
                listed = await self.pool.list_tools(choice.server)
            except McpServerError as exc:
                raise ApplicationError(
                    self.redact(str(exc)), type=ErrorType.MCP_UNAVAILABLE
                ) from None
            try:
                rows.extend(self._rows(choice, server, listed, config))
            except InvalidMcpConfig as exc:
                raise _refuse(str(exc)) from None
        self._check_names(rows, config)
        size = len(json.dumps(rows, default=str))
        if size > MAX_LIST_CHARS:
            raise _refuse(
                f"the chosen MCP tools take {size // 1000} KB (descriptions and schemas), more "
                f"than a run carries ({MAX_LIST_CHARS // 1000} KB): choose fewer with the "
                "server's `tools` in mcp_servers"
            )
        async with self.repo.transaction() as db:
            recorded = await store.record(db, inp.run_id, rows)
        return [_info(r) for r in recorded]

    def _server(self, name: str) -> McpServerConfig:
        try:
            return self.pool.config(name)
        except KeyError as exc:
            raise _refuse(f"the run's mcp_servers name {exc.args[0]}") from None

    def _rows(
        self,
        choice: McpServerChoice,
        server: McpServerConfig,
        listed: list[ListedTool],
        config: AgentConfig,
    ) -> list[dict[str, Any]]:
        by_name = {t.name: t for t in listed}
        wanted = choice.tools if choice.tools is not None else sorted(by_name)
        missing = [t for t in wanted if t not in by_name]
        if missing:
            raise InvalidMcpConfig(
                f"MCP server {choice.server!r} offers no tool {', '.join(map(repr, missing))}; "
                f"it offers: {', '.join(sorted(by_name)) or '(none)'}"
            )
        rows = []
        for tool in (by_name[t] for t in wanted):
            name = tool_name(choice.server, tool.name)
            if not TOOL_NAME.match(name):
                raise InvalidMcpConfig(
                    f"MCP tool {tool.name!r} of server {choice.server!r} would be named {name!r}, "
                    "which model APIs refuse (1-64 letters, digits, '_' or '-'); leave it out "
                    "with the server's `tools` in mcp_servers"
                )
            approval = mcp_approval(name, tool.annotations, config, self.floors, server.approval)
            rows.append(
                {
                    "name": name,
                    "server": choice.server,
                    "tool": tool.name,
                    "description": storable(tool.description),
                    "input_schema": tool.input_schema,
                    "annotations": tool.annotations,
                    "approval": approval.value,
                    "timeout_s": server.timeout_s,
                    "max_attempts": server.max_attempts,
                }
            )
        return rows

    def _check_names(self, rows: list[dict[str, Any]], config: AgentConfig) -> None:
        taken = set(self.registry.names) | {c.name for c in config.client_tools}
        seen: set[str] = set()
        for row in rows:
            name = row["name"]
            if name in taken or name in seen:
                what = "a built-in or client tool" if name in taken else "another MCP tool"
                raise _refuse(f"MCP tool name {name!r} collides with {what}; not offered")
            seen.add(name)
        for name in set(config.approval_overrides) | set(config.approval_allow):
            server = name.split(SEPARATOR, 1)[0] if SEPARATOR in name else None
            chosen = {c.server for c in config.mcp_servers or ()}
            if server in chosen and name not in seen:
                raise _refuse(f"approval settings name unknown MCP tool {name!r}")

    # -- the call path (execute_tool dispatches here) -----------------------------------------

    async def recorded(self, run_id: str, name: str) -> RunMcpTool | None:
        tools = self._runs.get(run_id)
        if tools is None:
            async with self.repo.session() as db:
                tools = {r.name: r for r in await store.read(db, run_id)}
            if tools:
                self._runs[run_id] = tools
                while len(self._runs) > RUN_CACHE_RUNS:
                    self._runs.popitem(last=False)
        else:
            self._runs.move_to_end(run_id)
        return tools.get(name)

    async def known(self, run_id: str, name: str) -> bool:
        """Whether `name` is an MCP tool the run recorded from a server this worker declares:
        a metric label bounded by the operator's config (never a name the model made up)."""
        if SEPARATOR not in name:
            return False
        tool = await self.recorded(run_id, name)
        return tool is not None and tool.server in self.pool.servers

    async def execute(self, inp: ExecuteToolInput, tool: RunMcpTool, record: Record) -> ToolResult:
        call = inp.call
        row, started = await self.repo.claim_tool_attempt(
            inp.run_id, call.id, max_attempts=tool.max_attempts
        )
        if ToolCallStatus(row.status).terminal:
            return _as_result(inp, row, replayed=True)
        if not started:
            return await record(
                inp,
                f"error: {call.name} was started {row.attempts} times and never finished: its "
                "worker was lost each time (or its result could not be recorded); not run again",
                True,
            )
        if tool.approval == ToolApproval.NEEDS_APPROVAL and row.decision not in APPROVED:
            return await record(
                inp, f"error: {call.name} needs approval and none was recorded for this call", True
            )
        problem, arguments = _arguments(call.arguments, tool)
        if problem:
            return await record(inp, problem, True)
        text, is_error = await self._call(inp, tool, arguments, row.attempts)
        return await record(inp, self.redact(text), is_error)

    async def _call(
        self, inp: ExecuteToolInput, tool: RunMcpTool, arguments: dict[str, Any], runs: int
    ) -> tuple[str, bool]:
        heartbeat = asyncio.create_task(_heartbeat_every(HEARTBEAT_EVERY_S))
        try:
            async with asyncio.timeout(tool.timeout_s):
                result = await self.pool.call_tool(tool.server, tool.tool, arguments, inp.call.id)
        except TimeoutError:
            return (
                f"error: {tool.name} timed out after {tool.timeout_s:g}s "
                "(the call was cancelled on the MCP server)",
                True,
            )
        except McpServerError as exc:
            if runs < tool.max_attempts:
                raise ApplicationError(
                    storable(self.redact(str(exc))), type=ErrorType.MCP_UNAVAILABLE
                ) from None
            return f"error: {tool.name} failed after {runs} attempts: {exc}", True
        except MCPError as exc:
            return f"error: MCP server {tool.server!r} refused the call: {exc.error.message}", True
        finally:
            heartbeat.cancel()
        text = _result_text(result)
        if result.is_error:
            return (text if text.startswith("error") else f"error: {text}"), True
        return text, False


def _arguments(raw: str, tool: RunMcpTool) -> tuple[str | None, dict[str, Any]]:
    """The call's arguments, or why they cannot be sent (checked against the recorded schema)."""
    try:
        value = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        return f"error: the arguments are not valid JSON ({exc.msg} at {exc.pos})", {}
    if not isinstance(value, dict):
        return "error: the arguments must be a JSON object", {}
    try:
        errors = sorted(
            jsonschema.Draft202012Validator(tool.input_schema).iter_errors(value), key=str
        )
    except jsonschema.SchemaError:
        errors = []  # the server's schema is its own business; the server checks again
    if errors:
        where = ".".join(str(p) for p in errors[0].absolute_path) or "(arguments)"
        return f"error: invalid arguments for {tool.name}: {where}: {errors[0].message}", {}
    return None, value
