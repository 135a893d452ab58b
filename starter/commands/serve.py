"""`agentrun serve`: the HTTP API on uvicorn (README "HTTP API"), until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentrun.telemetry.tracing import configure_tracing
from starter.connect import database, settings_or_exit, temporal
from starter.exits import EXIT_OK, EXIT_UNREACHABLE, CliError
from starter.output import console, print_json

if TYPE_CHECKING:
    from agentrun.settings import Settings


async def cmd_serve(args: argparse.Namespace) -> int:
    from agentrun.api.server import build_server, port_free, serve_until, url_of, wait_started
    from agentrun.store import Repository

    settings = settings_or_exit()
    host = args.host or settings.http_host
    port = args.port or settings.http_port
    if not port_free(host, port):
        raise CliError(
            f"cannot listen on {host}:{port}: the address is in use; free it or set "
            "AGENTRUN_HTTP_PORT",
            EXIT_UNREACHABLE,
        )
    configure_tracing("agentrun-api")  # its service name, before the client is connected
    client = await temporal(settings)
    async with database(settings):
        pass  # reachable and migrated, or a clear error now rather than on the first request
    repo = Repository.connect(settings.sqlalchemy_url, max_overflow=0)
    try:
        server = build_server(settings, repo=repo, client=client, host=host, port=port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(server.serve())
        await wait_started(server, task, timeout=60)
        url = url_of(host, port)
        if args.json:
            print_json({"event": "listening", "url": url, "docs": f"{url}/docs"})
        else:
            console.print(
                f"[bold green]agentrun HTTP API[/] on {url} (docs {url}/docs, OpenAPI "
                f"{url}/openapi.json); Ctrl-C stops"
            )
        await serve_until(server, task, stop)
    finally:
        await repo.close()
    if args.json:
        print_json({"event": "stopped"})
    return EXIT_OK


@contextlib.asynccontextmanager
async def api_running(settings: Settings) -> AsyncIterator[ApiState]:
    """`agentrun dev`'s HTTP API: served in this process until the block ends, with the local
    development key (kept in the data folder). A port in use is reported, not fatal: the rest
    of the stack still comes up."""
    from agentrun.api.server import build_server, ensure_dev_key, port_free, url_of, wait_started
    from agentrun.client import connect
    from agentrun.store import Repository

    host, port = settings.http_host, settings.http_port
    if not port_free(host, port):
        yield ApiState(problem=f"{host}:{port} is in use (set AGENTRUN_HTTP_PORT)")
        return
    repo = Repository.connect(settings.sqlalchemy_url, max_overflow=0)
    try:
        key = await ensure_dev_key(repo, settings.data_dir)
        server = build_server(
            settings, repo=repo, client=await connect(settings), log_level="warning"
        )
        task = asyncio.create_task(server.serve())
        try:
            await wait_started(server, task, timeout=30)
            yield ApiState(url=url_of(host, port), key=key)
        finally:
            server.should_exit = True
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await repo.close()


@dataclass
class ApiState:
    url: str | None = None
    key: str | None = None
    problem: str | None = None
