"""The tool registry and the built-in tools.

A tool is a Python function with a pydantic argument model, a description, a default approval
policy, a timeout and a retry policy; the JSON schema sent to the model is generated from the
argument model. Tools run at least once: each gets its tool_call_id as an idempotency key.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import math
import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from activities.sandbox import Sandbox, SandboxUnavailable, kill_group
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
    # How shell commands are confined; None: a sandbox with the default settings.
    sandbox: Sandbox | None = None

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
    approval: ToolApproval = ToolApproval.AUTO
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
        if not inspect.iscoroutinefunction(self.fn):
            # A plain function would block the event loop: its timeout could not fire and no
            # heartbeat would go out. In a thread, the timeout answers on time; the thread
            # itself cannot be killed and finishes in the background.
            result = await asyncio.to_thread(self.fn, args, ctx)
        else:
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
        raise ToolError(f"{args.path!r} does not exist in the workspace {ctx.workspace}")
    if not folder.is_dir():
        raise ToolError(f"{args.path!r} is not a folder in the workspace {ctx.workspace}")
    # The folder's full path first: a person (and the model) sees which workspace this is.
    lines = [f"{folder}:"]
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        kind = "dir" if entry.is_dir() else "file"
        size = entry.lstat().st_size if kind == "file" else 0
        lines.append(f"{entry.name}{'/' if kind == 'dir' else ''}\t{size}")
    if len(lines) == 1:
        lines.append("(empty folder)")
    return "\n".join(lines)


class ReadFileArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="File inside the workspace.")
    max_bytes: int = Field(default=64_000, ge=1, le=1_000_000)


def read_file(args: ReadFileArgs, ctx: ToolContext) -> str:
    path = confine(ctx.workspace, args.path)
    if not path.is_file():
        raise ToolError(f"{args.path!r} is not a file in the workspace {ctx.workspace}")
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
# Bytes read before the command is stopped: enough for the cap in any UTF-8 text, and no more,
# so a command that prints gigabytes costs the worker a few kilobytes.
BASH_READ_CAP = BASH_OUTPUT_CAP * 4 + 4
_DEFAULT_SANDBOX = Sandbox()
_STOPPING: set[asyncio.Task[None]] = set()


async def bash(args: BashArgs, ctx: ToolContext) -> str:
    sandbox = ctx.sandbox or _DEFAULT_SANDBOX
    try:
        await asyncio.to_thread(sandbox.check)
        await asyncio.to_thread(sandbox.prepare_workspace, ctx.workspace)
    except SandboxUnavailable as exc:
        raise ToolError(str(exc)) from None
    proc = await asyncio.create_subprocess_exec(
        *sandbox.argv(args.command),
        cwd=ctx.workspace,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=sandbox.preexec(),
        env=sandbox.env(
            ctx.workspace,
            {"AGENTRUN_TOOL_CALL_ID": ctx.tool_call_id, "AGENTRUN_RUN_ID": ctx.run_id},
        ),
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(args.timeout_s):
            out, cut = await _read_until_exit(proc, proc.stdout, sandbox)
    except TimeoutError:
        await _stop(proc, sandbox)
        raise ToolError(f"command timed out after {args.timeout_s:g}s") from None
    except BaseException:
        # Cancelled (or anything else): the command must not outlive the call. Stopping takes
        # a moment; the cancel is not held up for it.
        sandbox.stop(proc.pid)
        stopping = asyncio.create_task(_stop(proc, sandbox))
        _STOPPING.add(stopping)
        stopping.add_done_callback(_STOPPING.discard)
        raise
    text = out.decode("utf-8", errors="replace")
    if cut or len(text) > BASH_OUTPUT_CAP:
        text = text[:BASH_OUTPUT_CAP] + (
            f"\n[output truncated at {BASH_OUTPUT_CAP} characters"
            + ("; the command was stopped]" if cut else "]")
        )
    code = "killed (output past the cap)" if cut else str(proc.returncode)
    return f"exit code {code}\n{text}"


async def _read_until_exit(
    proc: asyncio.subprocess.Process, stream: asyncio.StreamReader, sandbox: Sandbox
) -> tuple[bytes, bool]:
    """The command's output up to BASH_READ_CAP bytes, and whether it was cut (the command is
    then killed). Reading also stops shortly after the command exits: a process it left
    behind holding the pipe (possible only without a PID namespace) does not keep the call
    waiting."""
    buf = bytearray()
    cut = False

    async def read() -> None:
        nonlocal cut
        while True:
            chunk = await stream.read(65_536)
            if not chunk:
                return
            buf.extend(chunk)
            if len(buf) > BASH_READ_CAP:
                cut = True
                return

    async def exit() -> None:
        # Not proc.wait(): before Python 3.12 it also waits for the pipes to close.
        while True:
            if proc.returncode is not None:
                return
            await asyncio.sleep(0.05)

    reader = asyncio.create_task(read())
    exited = asyncio.create_task(exit())
    try:
        await asyncio.wait({reader, exited}, return_when=asyncio.FIRST_COMPLETED)
        if reader.done() and not cut:
            await exited  # the output ended; the command may still be running
        elif not reader.done():
            # It exited; whatever it left behind goes with it (a namespace is gone already),
            # and what is still in the pipe is read for a moment.
            kill_group(proc.pid)
            await asyncio.wait({reader}, timeout=2)
    finally:
        reader.cancel()
        exited.cancel()
    await _stop(proc, sandbox)
    return bytes(buf[:BASH_READ_CAP]), cut


async def _stop(proc: asyncio.subprocess.Process, sandbox: Sandbox) -> None:
    """Kill the command (its namespace, or its process group) and close our end of its pipe,
    so that a full pipe nobody reads any more cannot hold the process record open."""
    if proc.returncode is None:
        sandbox.stop(proc.pid)
        for _ in range(200):  # unshare exits once its init is gone: about at once
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.01)
    kill_group(proc.pid)
    _close_pipes(proc)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), 10)


def _close_pipes(proc: asyncio.subprocess.Process) -> None:
    # asyncio has no public way to close a subprocess's pipes without killing it; the
    # transport's close() does both, and the process is being killed anyway.
    transport = getattr(proc, "_transport", None)
    if transport is not None:
        transport.close()


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
            approval=ToolApproval.NEEDS_APPROVAL,
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
