"""The follower modes of bench/hub_latency.py: a follower factory each. "hub" follows through
Repository.follow_events (the EventHub), "direct" through agentrun.store.events.follow_direct
(the old follower), "sse" as SSE clients of an `agentrun serve` process of its own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from agentrun.stack import free_port
from agentrun.store import Repository, events


def _with_app(sa_url: str, app: str) -> str:
    return f"{sa_url}{'&' if '?' in sa_url else '?'}application_name={app}"


# -- modes: a follower factory each ------------------------------------------------------------


class Mode:
    """How followers follow a run. `app_name`: the application_name of the following
    process's PostgreSQL connections; `pid`: that process (RSS, CPU)."""

    name = ""
    app_name = ""
    pid = os.getpid()
    needs_temporal = False
    temporal_address = ""  # set by run() when needs_temporal

    async def start(self, sa_url: str) -> None:
        raise NotImplementedError

    def notes(self) -> str:
        return ""

    def follow(self, run_id: str) -> AsyncIterator[tuple[int, str, dict[str, Any]]]:
        """(seq, type, data) of every event of the run, until it ends."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class HubMode(Mode):
    name = "hub"

    async def start(self, sa_url: str) -> None:
        self.app_name = f"bench-{self.name}"
        self.repo = Repository.connect(_with_app(sa_url, self.app_name), pool_size=10)

    def _events(self, run_id: str) -> AsyncIterator[Any]:
        return self.repo.follow_events(run_id, 0)

    async def follow(self, run_id: str) -> AsyncIterator[tuple[int, str, dict[str, Any]]]:
        async for event in self._events(run_id):
            yield event.seq, event.type, event.data

    def notes(self) -> str:
        """What the mode says about its work, printed under its row."""
        st = self.repo.event_hub().stats()
        per_query = st.reads / st.queries if st.queries else 0.0
        return (
            f"        hub: {st.queries} queries ({per_query:.1f} run reads a query), "
            f"{st.catch_up_reads} catch-up reads, {st.drops} drops, {st.connects} LISTEN"
        )

    async def close(self) -> None:
        await self.repo.close()


class DirectMode(HubMode):
    name = "direct"

    def notes(self) -> str:
        return ""

    def _events(self, run_id: str) -> AsyncIterator[Any]:
        return events.follow_direct(self.repo, run_id, 0)


class SseMode(Mode):
    """`agentrun serve` in a process of its own; the followers are its SSE clients."""

    name = "sse"
    needs_temporal = True

    async def start(self, sa_url: str) -> None:
        self.app_name = f"bench-{self.name}"
        setup = Repository.connect(sa_url, pool_size=1)
        try:
            _, token = await setup.create_api_key(
                "default", f"bench-{uuid.uuid4().hex[:8]}", ["read"]
            )
        finally:
            await setup.close()
        port = free_port()
        self.cwd = tempfile.mkdtemp(prefix="agentrun-hub-bench-sse-")  # no stray .env
        env = {
            **os.environ,
            "AGENTRUN_DATABASE_URL": _with_app(sa_url, self.app_name),
            "TEMPORAL_ADDRESS": self.temporal_address,
            "AGENTRUN_DATA_DIR": self.cwd,
        }
        self.proc = _spawn_server(env, Path(self.cwd), port)
        self.pid = self.proc.pid
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(30.0, read=None),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agentrun serve exited; see {self.cwd}/serve.log")
            with contextlib.suppress(httpx.HTTPError):
                if (await self.http.get("/healthz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError("agentrun serve did not answer /healthz within 60 s")
            await asyncio.sleep(0.2)

    async def follow(self, run_id: str) -> AsyncIterator[tuple[int, str, dict[str, Any]]]:
        async with aconnect_sse(self.http, "GET", f"/v1/runs/{run_id}/events") as source:
            source.response.raise_for_status()
            async for sse in source.aiter_sse():
                if not sse.data:
                    # httpx-sse 0.4 turns the heartbeat comment (": ping") into an empty
                    # "message" event once an id has been seen (it keeps the last id): skip.
                    continue
                yield int(sse.id), sse.event, json.loads(sse.data)

    async def close(self) -> None:
        await self.http.aclose()
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)


def _spawn_server(env: dict[str, str], cwd: Path, port: int) -> subprocess.Popen[bytes]:
    """`agentrun serve --port PORT` (the console script's main, this interpreter), its output
    in cwd/serve.log."""
    with (cwd / "serve.log").open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from starter.cli import main; main()",
                "serve",
                "--port",
                str(port),
            ],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


MODES: dict[str, type[Mode]] = {"hub": HubMode, "direct": DirectMode, "sse": SseMode}
