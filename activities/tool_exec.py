"""The execute-tool activity: validate, run, record; a recorded result is never run again."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.tools import RetryableToolError, ToolContext, ToolError, ToolRegistry
from agentrun.contracts import ExecuteToolInput, ToolResult, preview
from agentrun.db.models import ToolCall, ToolCallStatus
from agentrun.db.repository import Repository

RESULT_CAP = 64_000
# Heartbeats tell Temporal the worker is alive (a lost worker's tool is retried within the
# heartbeat timeout, not after start-to-close) and carry cancellation to the tool.
HEARTBEAT_EVERY_S = 1.0


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


class ToolActivities:
    def __init__(self, repo: Repository, registry: ToolRegistry, default_workspace: Path) -> None:
        self.repo = repo
        self.registry = registry
        self.default_workspace = default_workspace

    @activity.defn(name="agentrun.execute_tool")
    async def execute_tool(self, inp: ExecuteToolInput) -> ToolResult:
        call = inp.call
        if inp.skip_reason is not None or inp.given_result is not None:
            row = await self.repo.get_tool_call(inp.run_id, call.id)
        else:
            row = await self.repo.start_tool_attempt(inp.run_id, call.id)
        if ToolCallStatus(row.status).terminal:
            return _as_result(inp, row, replayed=True)
        if inp.skip_reason is not None:
            return await self._record(inp, inp.skip_reason, is_error=True)
        if inp.given_result is not None:
            return await self._record(inp, inp.given_result, is_error=inp.given_is_error)
        result, is_error = await self._run(inp, row.attempts)
        return await self._record(inp, result, is_error)

    async def _run(self, inp: ExecuteToolInput, runs: int) -> tuple[str, bool]:
        """Run the tool; `runs` counts the times it was started for this call, this one too
        (a lost worker or a database outage retries the activity without spending them)."""
        call = inp.call
        tool = self.registry.get(call.name)
        if tool is None:
            return (
                f"error: unknown tool {call.name!r}; available tools: "
                f"{', '.join(self.registry.names)}",
                True,
            )
        try:
            raw = json.loads(call.arguments) if call.arguments.strip() else {}
        except json.JSONDecodeError as exc:
            return f"error: the arguments are not valid JSON ({exc.msg} at {exc.pos})", True
        try:
            args = tool.args_model.model_validate(raw)
        except ValidationError as exc:
            return f"error: invalid arguments for {tool.name}: {_format_validation(exc)}", True
        workspace = Path(inp.workspace) if inp.workspace else self.default_workspace
        workspace.mkdir(parents=True, exist_ok=True)
        attempt = activity.info().attempt
        ctx = ToolContext(inp.run_id, call.id, workspace, attempt)
        heartbeat = asyncio.create_task(_heartbeat_every(HEARTBEAT_EVERY_S))
        try:
            value = await asyncio.wait_for(tool.call(args, ctx), tool.timeout_s)
        except RetryableToolError as exc:
            if runs < tool.max_attempts:
                raise ApplicationError(f"{tool.name}: {exc}", type="ToolRetry") from exc
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

    async def _record(self, inp: ExecuteToolInput, result: str, is_error: bool) -> ToolResult:
        row, _ = await self.repo.record_tool_result(
            session_id=inp.session_id,
            run_id=inp.run_id,
            tool_call_id=inp.call.id,
            result=result,
            is_error=is_error,
        )
        return _as_result(inp, row, replayed=False)


def _as_result(inp: ExecuteToolInput, row: ToolCall, *, replayed: bool) -> ToolResult:
    """The small result the workflow keeps: the recorded text is cut to a preview."""
    text, _ = preview(row.result or "")
    return ToolResult(
        tool_call_id=inp.call.id,
        name=inp.call.name,
        is_error=row.is_error,
        preview=text,
        replayed=replayed,
    )
