"""The tool registry and the built-in tools.

A tool is a Python function with a pydantic argument model, a description, a default approval
policy, a timeout and a retry policy; the JSON schema sent to the model is generated from the
argument model. Tools run at least once: each gets its tool_call_id as an idempotency key.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import ctypes
import inspect
import math
import operator
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from agentrun.contracts import ToolApproval, ToolInfo


class ToolError(Exception):
    """A tool's failure that the model should see as an error result."""


class RetryableToolError(ToolError):
    """A passing failure: Temporal retries the tool, up to its max_attempts."""


@dataclass(frozen=True)
class ToolContext:
    run_id: str
    tool_call_id: str
    workspace: Path
    attempt: int = 1

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.tool_call_id}"


ToolFn = Callable[[Any, ToolContext], Awaitable[Any] | Any]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args_model: type[BaseModel]
    fn: ToolFn
    approval: ToolApproval = "auto"
    timeout_s: float = 60
    max_attempts: int = 3
    read_only: bool = False

    def openai_schema(self) -> dict[str, Any]:
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": schema},
        }

    def info(self) -> ToolInfo:
        return ToolInfo(
            name=self.name,
            approval=self.approval,
            timeout_s=self.timeout_s,
            max_attempts=self.max_attempts,
        )

    async def call(self, args: BaseModel, ctx: ToolContext) -> Any:
        result = self.fn(args, ctx)
        if inspect.isawaitable(result):
            result = await result
        return result


class ToolRegistry:
    def __init__(self, tools: list[Tool] | None = None) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools or []:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is already registered")
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    @property
    def names(self) -> list[str]:
        return sorted(self._tools)

    def select(self, names: list[str] | None) -> list[Tool]:
        """The named tools (all when None); an unknown name raises ValueError."""
        if names is None:
            return [self._tools[n] for n in self.names]
        unknown = [n for n in names if n not in self._tools]
        if unknown:
            raise ValueError(
                f"unknown tool(s) {', '.join(unknown)}; available: {', '.join(self.names)}"
            )
        return [self._tools[n] for n in names]


# -------------------------------------------------------------------------------------------
# workspace confinement


def confine(workspace: Path, relative: str) -> Path:
    """Resolve `relative` inside the workspace; a path or symlink that leads out is refused."""
    root = workspace.resolve()
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        raise ToolError(f"path {relative!r} is outside the workspace")
    return candidate


# -------------------------------------------------------------------------------------------
# built-ins


class LsArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(default=".", description="Folder inside the workspace.")


def ls(args: LsArgs, ctx: ToolContext) -> str:
    folder = confine(ctx.workspace, args.path)
    if not folder.exists():
        raise ToolError(f"{args.path!r} does not exist")
    if not folder.is_dir():
        raise ToolError(f"{args.path!r} is not a folder")
    lines = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        kind = "dir" if entry.is_dir() else "file"
        size = entry.lstat().st_size if kind == "file" else 0
        lines.append(f"{entry.name}{'/' if kind == 'dir' else ''}\t{size}")
    return "\n".join(lines) if lines else "(empty)"


class ReadFileArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="File inside the workspace.")
    max_bytes: int = Field(default=64_000, ge=1, le=1_000_000)


def read_file(args: ReadFileArgs, ctx: ToolContext) -> str:
    path = confine(ctx.workspace, args.path)
    if not path.is_file():
        raise ToolError(f"{args.path!r} is not a file in the workspace")
    with path.open("rb") as f:
        data = f.read(args.max_bytes + 1)
    text = data[: args.max_bytes].decode("utf-8", errors="replace")
    if len(data) > args.max_bytes:
        text += f"\n[truncated at {args.max_bytes} bytes]"
    return text


class BashArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    command: str = Field(min_length=1, max_length=10_000, description="A bash command line.")
    timeout_s: float = Field(default=30, gt=0, le=600)


BASH_OUTPUT_CAP = 16_000


async def bash(args: BashArgs, ctx: ToolContext) -> str:
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        args.command,
        cwd=ctx.workspace,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent,
        env={**os.environ, "AGENTRUN_TOOL_CALL_ID": ctx.tool_call_id},
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), args.timeout_s)
    except TimeoutError:
        _kill_group(proc.pid)
        await proc.wait()
        raise ToolError(f"command timed out after {args.timeout_s:g}s") from None
    except asyncio.CancelledError:
        # A cancelled activity must not leave its command running.
        _kill_group(proc.pid)
        raise
    text = out.decode("utf-8", errors="replace")
    if len(text) > BASH_OUTPUT_CAP:
        text = text[:BASH_OUTPUT_CAP] + f"\n[output truncated at {BASH_OUTPUT_CAP} characters]"
    return f"exit code {proc.returncode}\n{text}"


def _die_with_parent() -> None:
    # A worker killed with SIGKILL cannot clean up; on Linux the kernel ends the command too.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


class CurrentTimeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timezone: str = Field(default="UTC", description="IANA time zone, e.g. Europe/Paris.")


def current_time(args: CurrentTimeArgs, ctx: ToolContext) -> str:
    try:
        zone = ZoneInfo(args.timezone) if args.timezone != "UTC" else UTC
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown time zone {args.timezone!r}") from None
    return datetime.now(zone).isoformat(timespec="seconds")


class CalculatorArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expression: str = Field(
        min_length=1, max_length=500, description="Arithmetic, e.g. (2 + 3) * 4 ** 2 / sqrt(9)."
    )


_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
    "log": math.log,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "min": min,
    "max": max,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


def _evaluate(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        value = node.value
        assert isinstance(value, int | float)
        return value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))  # type: ignore[no-any-return]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 1000 or abs(left) > 1e100):
            raise ToolError("exponent too large")
        return _BINARY[type(node.op)](left, right)  # type: ignore[no-any-return]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        return _FUNCTIONS[node.func.id](*(_evaluate(a) for a in node.args))  # type: ignore[no-any-return]
    raise ToolError(f"unsupported expression element: {ast.dump(node)[:80]}")


def calculator(args: CalculatorArgs, ctx: ToolContext) -> str:
    try:
        tree = ast.parse(args.expression.replace("^", "**"), mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"not an arithmetic expression: {exc.msg}") from None
    try:
        value = _evaluate(tree)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except (OverflowError, ValueError) as exc:
        raise ToolError(f"cannot compute: {exc}") from None
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return str(value)


def builtin_tools() -> list[Tool]:
    return [
        Tool(
            "ls",
            "List the files in a folder of the workspace.",
            LsArgs,
            ls,
            read_only=True,
            timeout_s=10,
        ),
        Tool(
            "read_file",
            "Read a text file from the workspace.",
            ReadFileArgs,
            read_file,
            read_only=True,
            timeout_s=10,
        ),
        Tool(
            "bash",
            "Run a bash command in the workspace and return its output.",
            BashArgs,
            bash,
            approval="needs_approval",
            timeout_s=660,
            max_attempts=3,
        ),
        Tool(
            "current_time",
            "The current date and time in a time zone.",
            CurrentTimeArgs,
            current_time,
            read_only=True,
            timeout_s=5,
        ),
        Tool(
            "calculator",
            "Evaluate an arithmetic expression exactly; never guess arithmetic.",
            CalculatorArgs,
            calculator,
            read_only=True,
            timeout_s=5,
        ),
    ]


def default_registry() -> ToolRegistry:
    return ToolRegistry(builtin_tools())
