"""Running the app under uvicorn (`agentrun serve`, `agentrun dev`), and the local development
key `agentrun dev` keeps in its data folder."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI

from agentrun.api.app import create_app
from agentrun.protocol.statuses import Scope

if TYPE_CHECKING:
    from temporalio.client import Client

    from agentrun.settings import Settings
    from agentrun.store import Repository

DEV_KEY_FILE = "dev-api-key"
DEV_TENANT = "default"
DEV_KEY_NAME = "dev"


class Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: the process that runs it (agentrun serve,
    agentrun dev, a test) owns SIGINT and SIGTERM and stops it (should_exit, `serve_until`).
    On the way out the app's event streams end at once (clients resume with Last-Event-ID)
    instead of holding the shutdown for its whole grace period."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        draining = getattr(self.app.state, "draining", None)
        if draining is not None:
            draining.set()
            repo = getattr(self.app.state, "repo", None)
            if repo is not None:
                repo.event_hub().wake_all()
        await super().shutdown(sockets)


def build_server(
    settings: Settings,
    *,
    repo: Repository | None = None,
    client: Client | None = None,
    host: str | None = None,
    port: int | None = None,
    log_level: str = "info",
) -> Server:
    """A uvicorn server for the app. uvicorn's own access log is off (it prints query strings,
    and EventSource clients put their key in one); agentrun.api.access logs paths only."""
    app = create_app(settings, repo=repo, client=client)
    config = uvicorn.Config(
        app,
        host=host or settings.http_host,
        port=settings.http_port if port is None else port,
        access_log=False,
        log_level=log_level,
        # Long-lived event streams: a stop waits this long for them, then closes them.
        timeout_graceful_shutdown=5,
        proxy_headers=False,
        server_header=False,
    )
    _access_log_like_uvicorn()
    # access_log=False leaves uvicorn's logger in place for others to attach to (a handler on
    # the root logger would still get its lines, query strings included): silence it outright.
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers = []
    uvicorn_access.propagate = False
    uvicorn_access.disabled = True
    return Server(config, app)


def _access_log_like_uvicorn() -> None:
    access = logging.getLogger("agentrun.api.access")
    if not access.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False


async def serve_until(
    server: uvicorn.Server, task: asyncio.Task[None], stop: asyncio.Event
) -> None:
    """Serve (`task` runs server.serve()) until `stop` is set: then stop accepting, let the
    requests in flight finish (event streams get timeout_graceful_shutdown), close."""
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopped.cancel()
    await task


async def wait_started(server: uvicorn.Server, task: asyncio.Task[None], timeout: float) -> None:
    """Until uvicorn listens (bounded); its failure to start (a port in use) is raised."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not server.started:
        if task.done():
            task.result()
            raise OSError("the HTTP server stopped while starting (is the port in use?)")
        if loop.time() > deadline:
            raise TimeoutError(f"the HTTP server did not start within {timeout:g}s")
        await asyncio.sleep(0.05)


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def url_of(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{shown}:{port}" if ":" not in shown else f"http://[{shown}]:{port}"


async def ensure_dev_key(repo: Repository, data_dir: Path) -> str:
    """The local development key: made once (tenant default, name dev, every scope), kept in
    `<data_dir>/dev-api-key` (mode 0600) and reused while the store still accepts it."""
    path = Path(data_dir) / DEV_KEY_FILE
    if path.exists():
        token = path.read_text().strip()
        if token and await repo.authenticate_api_key(token) is not None:
            return token
    try:
        _, token = await repo.create_api_key(DEV_TENANT, DEV_KEY_NAME, list(Scope))
    except ValueError:
        # A live "dev" key whose token this folder lost: revoke it and make a new one.
        await repo.revoke_api_key(DEV_KEY_NAME, tenant=DEV_TENANT)
        _, token = await repo.create_api_key(DEV_TENANT, DEV_KEY_NAME, list(Scope))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return str(token)
