"""Helpers of the MCP tests: the test server (tests/mcp_servers/notes_server.py) declared over
stdio or started over Streamable HTTP on a free port, and its call log."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agentrun.mcp.config import McpServerConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVER_MODULE = "tests.mcp_servers.notes_server"


def stdio_server(name: str, log: Path, hold: Path | None = None, **fields: Any) -> McpServerConfig:
    env = {"MCP_TEST_LOG": str(log)}
    if hold is not None:
        env["MCP_TEST_HOLD"] = str(hold)
    env.update(fields.pop("env", {}))
    return McpServerConfig(
        name=name,
        transport="stdio",
        command=sys.executable,
        args=["-m", SERVER_MODULE],
        cwd=str(REPO_ROOT),
        env=env,
        **fields,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def http_server(log: Path, hold: Path | None = None) -> Iterator[str]:
    """The test server over Streamable HTTP (uvicorn on a free port); yields its URL."""
    port = free_port()
    env = {"MCP_TEST_LOG": str(log), "PATH": "/usr/bin:/bin"}
    if hold is not None:
        env["MCP_TEST_HOLD"] = str(hold)
    proc = subprocess.Popen(
        [sys.executable, "-m", SERVER_MODULE, "--http", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "the HTTP MCP server exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the HTTP MCP server did not listen"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def calls(log: Path, tool: str | None = None, key: str | None = None) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    found = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [
        c
        for c in found
        if (tool is None or c["tool"] == tool) and (key is None or c.get("key") == key)
    ]


async def wait_for_call(log: Path, tool: str, key: str, timeout: float = 30) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (found := calls(log, tool, key)):
        assert asyncio.get_running_loop().time() < deadline, f"the server never saw {tool} {key}"
        await asyncio.sleep(0.05)
    return found[-1]


async def wait_until(predicate: Any, what: str, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
