"""Connections to MCP servers, kept per worker process: one per server, opened on first use,
opened again after its server died, all closed when the worker stops (a stdio server's
process ends with its connection).

Each connection lives in a task of its own: the mcp client's transports are anyio contexts
that must be entered and left in one task, while calls come from many activities at once."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import IO, Any, cast

from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INVALID_REQUEST, CallToolResult, RequestParamsMeta

from agentrun.mcp.config import McpServerConfig, resolve_secret

__all__ = ["IDEMPOTENCY_META_KEY", "ListedTool", "McpPool", "McpServerError"]

# The request's _meta key that carries the tool_call_id: the same key on every retry of one
# call, so a server can do the call once.
IDEMPOTENCY_META_KEY = "agentrun/idempotency-key"
STDERR_TAIL_CHARS = 2_000
CLOSE_TIMEOUT_S = 10.0
MAX_LIST_PAGES = 50
LOST = "connection lost"


class McpServerError(Exception):
    """The server could not be started or reached, or went away during a call."""

    def __init__(self, server: str, problem: str, stderr_tail: str = "") -> None:
        self.server = server
        self.problem = problem
        self.stderr_tail = stderr_tail
        text = f"MCP server {server!r}: {problem}"
        if stderr_tail.strip():
            text += f"\n--- its stderr (last lines) ---\n{stderr_tail.strip()}"
        super().__init__(text)


@dataclass(frozen=True)
class ListedTool:
    name: str
    description: str
    input_schema: dict[str, Any]
    annotations: dict[str, Any] = field(default_factory=dict)


class _Connection:
    def __init__(self, config: McpServerConfig) -> None:
        self.config = config
        self.client: Client | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._error: BaseException | None = None
        self._errlog: IO[str] | None = None
        self._task: asyncio.Task[None] | None = None
        self.dead = False

    async def open(self) -> None:
        if self.config.transport == "stdio":
            self._errlog = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")
        self._task = asyncio.create_task(self._hold(), name=f"mcp server {self.config.name}")
        try:
            async with asyncio.timeout(self.config.startup_timeout_s):
                await self._ready.wait()
        except TimeoutError:
            await self.close()
            raise McpServerError(
                self.config.name,
                f"did not answer within {self.config.startup_timeout_s:g}s of starting",
                self.stderr_tail(),
            ) from None
        if self.client is None:
            error = self._error
            problem = _describe(error) if error is not None else "closed while starting"
            raise McpServerError(self.config.name, f"cannot start: {problem}", self.stderr_tail())

    async def _hold(self) -> None:
        try:
            async with AsyncExitStack() as stack:
                transport = await self._transport(stack)
                client = Client(transport, cache=None)
                self.client = await stack.enter_async_context(client)
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # kept for open() to report; the task ends quietly
            self._error = exc
        finally:
            self.dead = True
            self.client = None
            self._ready.set()

    async def _transport(self, stack: AsyncExitStack) -> Any:
        cfg = self.config
        where = f"MCP server {cfg.name!r}"
        if cfg.transport == "stdio":
            env = {k: resolve_secret(v, f"{where} env.{k}") for k, v in cfg.env.items()}
            params = StdioServerParameters(
                command=str(cfg.command), args=cfg.args, env=env or None, cwd=cfg.cwd
            )
            return stdio_client(params, errlog=self._errlog)  # type: ignore[arg-type]
        headers = {k: resolve_secret(v, f"{where} headers.{k}") for k, v in cfg.headers.items()}
        http = await stack.enter_async_context(create_mcp_http_client(headers=headers))
        return streamable_http_client(
            resolve_secret(str(cfg.url), f"{where} url"), http_client=http
        )

    def stderr_tail(self) -> str:
        if self._errlog is None:
            return ""
        try:
            self._errlog.flush()
            self._errlog.seek(0, 2)
            size = self._errlog.tell()
            self._errlog.seek(max(0, size - STDERR_TAIL_CHARS * 2))
            return self._errlog.read()[-STDERR_TAIL_CHARS:]
        except (OSError, ValueError):
            return ""

    async def close(self) -> None:
        self._stop.set()
        task = self._task
        if task is not None and not task.done():
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self._errlog is not None:
            with contextlib.suppress(OSError):
                self._errlog.close()


def _connection_gone(exc: MCPError) -> bool:
    """The connection is gone (a stdio server exited, an HTTP server dropped our session after
    a restart or its idle timeout): open it again rather than give the model an error."""
    return exc.code == CONNECTION_CLOSED or (
        exc.code == INVALID_REQUEST and exc.error.message == "Session terminated"
    )


def _transport_closed(client: Client | None) -> bool:
    """The connection's transport has ended (its stdio server exited, say) while idle: a call
    sent on it would fail without reaching any server, so it is opened again first. The mcp
    client has no public flag for it; its dispatcher's own one is read, and a version without
    it falls back to noticing the lost connection at the call."""
    if client is None:
        return True
    dispatcher = getattr(client.session, "_dispatcher", None)
    return bool(getattr(dispatcher, "_closed", False))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
        return "the connection closed before the server answered (did it exit?)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class McpPool:
    """The worker process's connections to the declared servers."""

    def __init__(self, servers: Mapping[str, McpServerConfig]) -> None:
        self.servers = dict(servers)
        self._connections: dict[str, _Connection] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    def config(self, server: str) -> McpServerConfig:
        found = self.servers.get(server)
        if found is None:
            known = ", ".join(sorted(self.servers)) or "(none)"
            raise KeyError(
                f"no MCP server {server!r} is declared on this worker (declared: {known})"
            )
        return found

    async def _connection(self, server: str) -> _Connection:
        if self._closed:
            raise McpServerError(server, "this worker is shutting down")
        config = self.config(server)
        lock = self._locks.setdefault(server, asyncio.Lock())
        async with lock:
            conn = self._connections.get(server)
            if conn is not None and not conn.dead and not _transport_closed(conn.client):
                return conn
            if conn is not None:  # its server died: start it again
                await conn.close()
            conn = _Connection(config)
            await conn.open()
            self._connections[server] = conn
            return conn

    async def _lost(self, server: str, conn: _Connection, what: str) -> McpServerError:
        tail = conn.stderr_tail()
        conn.dead = True
        await conn.close()
        return McpServerError(server, what, tail)

    async def list_tools(self, server: str) -> list[ListedTool]:
        """The server's tools, every page. Listing changes nothing on the server, so a
        connection found lost is opened again and the listing tried once more."""
        try:
            return await self._list_tools(server)
        except McpServerError as exc:
            if not exc.problem.startswith(LOST):
                raise
            return await self._list_tools(server)

    async def _list_tools(self, server: str) -> list[ListedTool]:
        conn = await self._connection(server)
        assert conn.client is not None
        tools: list[ListedTool] = []
        cursor: str | None = None
        try:
            for _ in range(MAX_LIST_PAGES):
                page = await conn.client.list_tools(cursor=cursor)
                tools.extend(
                    ListedTool(
                        name=t.name,
                        description=t.description or "",
                        input_schema=dict(t.input_schema),
                        annotations=(
                            t.annotations.model_dump(exclude_none=True, by_alias=True)
                            if t.annotations
                            else {}
                        ),
                    )
                    for t in page.tools
                )
                cursor = page.next_cursor
                if not cursor:
                    break
        except MCPError as exc:
            if _connection_gone(exc):
                raise await self._lost(server, conn, f"{LOST} while listing tools") from None
            raise McpServerError(server, f"tools/list failed: {exc}") from None
        return tools

    async def call_tool(
        self, server: str, tool: str, arguments: dict[str, Any], idempotency_key: str
    ) -> CallToolResult:
        """Call a tool; a cancel (the caller's timeout, the activity's cancel) is sent to the
        server as notifications/cancelled by the mcp client."""
        conn = await self._connection(server)
        assert conn.client is not None
        try:
            return await conn.client.call_tool(
                tool,
                arguments,
                meta=cast(RequestParamsMeta, {IDEMPOTENCY_META_KEY: idempotency_key}),
            )
        except MCPError as exc:
            if _connection_gone(exc):
                raise await self._lost(
                    server, conn, f"{LOST} during the call to {tool} (did it exit?)"
                ) from None
            raise

    def stderr_tail(self, server: str) -> str:
        conn = self._connections.get(server)
        return conn.stderr_tail() if conn else ""

    async def close(self) -> None:
        """Close every connection (stdio servers are stopped); later calls are refused."""
        self._closed = True
        conns = list(self._connections.values())
        self._connections.clear()
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
