"""Tool activities. agentrun.execute_tool runs a call: validate, run, record; a recorded result
is never run again. agentrun.record_tool_outcome records the result of a call that was not run
(skipped, rejected, a client's result, failed for good, abandoned); a call that already has a
result keeps it."""

from __future__ import annotations

import asyncio
import json
import re
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.policy import InvalidConfig, resolve_policy, workspace_for
from activities.sandbox import Redactor, Sandbox, SandboxConfig
from activities.subagent_tools import subrun_answer
from activities.tools import RetryableToolError, ToolContext, ToolError, ToolRegistry
from agentrun.contracts import (
    RESULT_CAP,
    AgentConfig,
    ExecuteToolInput,
    ToolOutcomeInput,
    ToolResult,
    preview,
)
from agentrun.db.models import ToolCall, ToolCallStatus
from agentrun.protocol.names import Activity
from agentrun.protocol.statuses import Decision
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.telemetry import metrics
from agentrun.telemetry.genai import tool_call, tool_label

if TYPE_CHECKING:
    from activities.mcp_tools import McpTools

# Heartbeats tell Temporal the worker is alive (a lost worker's tool is retried within the
# heartbeat timeout, not after start-to-close) and carry cancellation to the tool.
HEARTBEAT_EVERY_S = 1.0
# Runs whose config and session (written once, at open) a worker keeps, so the calls of a run
# do not each read its runs row again.
RUN_CACHE_RUNS = 1024


async def _heartbeat_every(seconds: float) -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(seconds)


def _format_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def storable(text: str) -> str:
    """The text as PostgreSQL text and jsonb can hold it: NUL and lone surrogates become
    U+FFFD, and a note says how many. Without this the insert fails with a data error, the
    activity retries, and the tool runs again and again."""
    nul = text.count("\x00")
    surrogates = len(_SURROGATE.findall(text))
    if not nul and not surrogates:
        return text
    text = _SURROGATE.sub("\ufffd", text.replace("\x00", "\ufffd"))
    notes = []
    if nul:
        notes.append(f"{nul} NUL byte{'s' if nul != 1 else ''}")
    if surrogates:
        notes.append(f"{surrogates} lone surrogate{'s' if surrogates != 1 else ''}")
    return text + f"\n[{' and '.join(notes)} replaced with \ufffd]"


_SURROGATE = re.compile("[\ud800-\udfff]")
# The call a result is recorded for, run or not.
_Call = ExecuteToolInput | ToolOutcomeInput


class ToolActivities:
    def __init__(
        self,
        repo: Repository,
        registry: ToolRegistry,
        default_workspace: Path | None = None,
        *,
        settings: Settings | None = None,
        mcp: McpTools | None = None,
    ) -> None:
        self.repo = repo
        self.mcp = mcp  # MCP servers' tools (activities/mcp_tools.py)
        self.registry = registry
        self.settings = settings or Settings()
        # An explicit default_workspace is the root (older callers passed <data_dir>/workspace).
        self.workspace_root = (
            default_workspace.resolve() if default_workspace else self.settings.tool_workspace_root
        )
        self.redact = Redactor.from_settings(self.settings)
        self.sandbox = Sandbox(SandboxConfig.from_settings(self.settings))
        self._runs: OrderedDict[str, tuple[AgentConfig, str]] = OrderedDict()

    @activity.defn(name=Activity.RECORD_TOOL_OUTCOME)
    async def record_tool_outcome(self, inp: ToolOutcomeInput) -> ToolResult:
        text = inp.text
        if inp.text_of_run is not None:  # a sub-agent's answer, whole (activities.subagent_tools)
            text = await subrun_answer(self.repo, inp.run_id, inp.text_of_run, inp.text)
        result = await self._record_outcome(inp, text, inp.is_error)
        if not result.replayed:  # a retried activity whose outcome is recorded counts once
            label = await self._label(inp.run_id, inp.call.name)
            metrics.tool_call(metrics.meter(), label, inp.kind.value)
        return result

    @activity.defn(name=Activity.EXECUTE_TOOL)
    async def execute_tool(self, inp: ExecuteToolInput) -> ToolResult:
        if inp.skip_reason is not None:  # the old input: see ExecuteToolInput
            return await self._record_outcome(inp, inp.skip_reason, is_error=True)
        if inp.given_result is not None:
            return await self._record_outcome(inp, inp.given_result, inp.given_is_error)
        call = inp.call
        tool = self.registry.get(call.name)
        if tool is None and self.mcp is not None:
            mcp_tool = await self.mcp.recorded(inp.run_id, call.name)
            if mcp_tool is not None:
                # Its name is one the run recorded from a declared server: a bounded label.
                with tool_call(call.name, call.id, call.arguments) as t:
                    done = await self.mcp.execute(inp, mcp_tool, self._record)
                    t.done(done.preview, done.is_error)
                return done
        row, started = await self.repo.claim_tool_attempt(
            inp.run_id, call.id, max_attempts=tool.max_attempts if tool else None
        )
        if ToolCallStatus(row.status).terminal:
            return _as_result(inp, row, replayed=True)
        if not started:
            # Each earlier start ended without a result: its worker was killed (perhaps by the
            # tool itself) or the result could not be recorded. Running it again would let
            # one tool take down every worker in turn.
            return await self._record(
                inp,
                f"error: {call.name} was started {row.attempts} times and never finished: its "
                "worker was lost each time (or its result could not be recorded); not run again",
                is_error=True,
            )
        workspace = await self._check(inp, row)
        if isinstance(workspace, str):
            label = await self._label(inp.run_id, call.name)
            metrics.tool_call(metrics.meter(), label, "refused")
            return await self._record(inp, workspace, is_error=True)
        with tool_call(tool_label(self.registry, call.name), call.id, call.arguments) as t:
            result, is_error = await self._run(inp, row.attempts, workspace)
            t.done(result, is_error)
        return await self._record(inp, result, is_error)

    async def _label(self, run_id: str, name: str) -> str:
        """The call's tool label (tool_label): a built-in's name, a recorded MCP tool's name."""
        known = False
        if self.mcp is not None and self.registry.get(name) is None:
            try:
                known = await self.mcp.known(run_id, name)
            except Exception:  # telemetry never fails a call: the label is "other"
                known = False
        return tool_label(self.registry, name, known)

    async def _check(self, inp: ExecuteToolInput, row: ToolCall) -> Path | str:
        """The workspace the call runs in, or why it must not run under the run's own policy,
        read from its runs row: the workflow may be an older version, or wrong, and this is
        the last guard."""
        call = inp.call
        try:
            config, session_id = await self._run_config(inp.run_id)
        except ValidationError:
            return "error: the run's config cannot be read; no tool runs for it"
        policy = resolve_policy(self.registry, config, self.settings.approval_floor, strict=False)
        if self.registry.get(call.name) is None:
            return (
                f"error: unknown tool {call.name!r}; available tools: "
                f"{', '.join(policy.server_names) or '(none)'}"
            )
        if not policy.enabled(call.name):
            return (
                f"error: tool {call.name!r} is not enabled for this run; its tools are: "
                f"{', '.join(policy.server_names) or '(none)'}"
            )
        if policy.needs_approval(call.name) and row.decision not in APPROVED:
            return f"error: {call.name} needs approval and none was recorded for this call"
        try:
            return workspace_for(config.workspace, self.workspace_root, session_id)
        except InvalidConfig as exc:
            return f"error: {exc}"

    async def _run_config(self, run_id: str) -> tuple[AgentConfig, str]:
        """The run's config and session id as recorded at open (neither changes after)."""
        cached = self._runs.get(run_id)
        if cached is not None:
            self._runs.move_to_end(run_id)
            return cached
        run = await self.repo.get_run(run_id)
        found = self._runs[run_id] = (_tolerant_config(run.config), run.session_id)
        while len(self._runs) > RUN_CACHE_RUNS:
            self._runs.popitem(last=False)
        return found

    async def _run(self, inp: ExecuteToolInput, runs: int, workspace: Path) -> tuple[str, bool]:
        """Run the tool; `runs` counts the times it was started for this call, this one too
        (a lost worker or a database outage retries the activity without spending them)."""
        call = inp.call
        tool = self.registry.get(call.name)
        if tool is None:
            return f"error: unknown tool {call.name!r}", True
        try:
            raw = json.loads(call.arguments) if call.arguments.strip() else {}
        except json.JSONDecodeError as exc:
            return f"error: the arguments are not valid JSON ({exc.msg} at {exc.pos})", True
        try:
            args = tool.args_model.model_validate(raw)
        except ValidationError as exc:
            return f"error: invalid arguments for {tool.name}: {_format_validation(exc)}", True
        await asyncio.to_thread(workspace.mkdir, parents=True, exist_ok=True)
        attempt = activity.info().attempt
        ctx = ToolContext(inp.run_id, call.id, workspace, attempt, sandbox=self.sandbox)
        heartbeat = asyncio.create_task(_heartbeat_every(HEARTBEAT_EVERY_S))
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that
            # lands as the tool returns, and a cancelled call's result would be recorded.
            async with asyncio.timeout(tool.timeout_s):
                value = await tool.call(args, ctx)
        except RetryableToolError as exc:
            if runs < tool.max_attempts:
                raise ApplicationError(
                    self.redact(storable(f"{tool.name}: {exc}")), type="ToolRetry"
                ) from None
            return f"error: {tool.name} failed after {runs} attempts: {exc}", True
        except ToolError as exc:
            return f"error: {exc}", True
        except TimeoutError:
            return f"error: {tool.name} timed out after {tool.timeout_s:g}s", True
        except Exception as exc:
            return f"error: {tool.name} raised {type(exc).__name__}: {exc}", True
        finally:
            heartbeat.cancel()
        text = _as_text(value)
        if len(text) > RESULT_CAP:
            text = text[:RESULT_CAP] + f"\n[result truncated at {RESULT_CAP} characters]"
        return text, False

    async def _record_outcome(self, inp: _Call, result: str, is_error: bool) -> ToolResult:
        row = await self.repo.get_tool_call(inp.run_id, inp.call.id)
        if ToolCallStatus(row.status).terminal:
            return _as_result(inp, row, replayed=True)
        return await self._record(inp, result, is_error)

    async def _record(self, inp: _Call, result: str, is_error: bool) -> ToolResult:
        # Secrets out first, then what PostgreSQL cannot store: what is recorded here is what
        # the event log shows and the model reads.
        row, _ = await self.repo.record_tool_result(
            session_id=inp.session_id,
            run_id=inp.run_id,
            tool_call_id=inp.call.id,
            result=storable(self.redact(result)),
            is_error=is_error,
        )
        return _as_result(inp, row, replayed=False)


APPROVED = (Decision.APPROVE, Decision.APPROVE_WITH_EDITS)


def _tolerant_config(stored: dict[str, Any]) -> AgentConfig:
    """The run's config as recorded at open; fields this worker does not know (written by a
    newer one) are left out rather than refused."""
    known = {k: v for k, v in (stored or {}).items() if k in AgentConfig.model_fields}
    return AgentConfig.model_validate(known)


def _as_result(inp: _Call, row: ToolCall, *, replayed: bool) -> ToolResult:
    """The small result the workflow keeps: the recorded text is cut to a preview."""
    text, _ = preview(row.result or "")
    return ToolResult(
        tool_call_id=inp.call.id,
        name=inp.call.name,
        is_error=row.is_error,
        preview=text,
        replayed=replayed,
    )
