"""A client that stops reading its event stream does not delay another client of the same run:
the stalled one is held back by its own connection's flow control (uvicorn pauses writing to
it), the other reads every event to the end, and the stalled one, once it reads again, gets
everything it missed."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.api.server import Server, build_server, wait_started
from agentrun.protocol.events import EventType
from agentrun.protocol.statuses import RunStatus, Scope
from agentrun.settings import Settings
from agentrun.stack import free_port
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply
from tests.http_support import data, sse_events, start

BOUND = 60.0


def _stalled_reader(port: int, path: str, token: str) -> socket.socket:
    """A connection that asks for the stream and then reads nothing (a tiny receive window)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    return sock


async def _narrow(server: Server, client_port: int) -> None:
    """A slow network path to that client: its server-side send buffer made small (the kernel
    would otherwise grow it to megabytes on loopback, and nothing would ever wait)."""
    while True:
        for conn in server.server_state.connections:
            peer = conn.transport.get_extra_info("peername")
            if peer and peer[1] == client_port:
                sock = conn.transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                return
        await asyncio.sleep(0.01)


def _read_to_the_end(sock: socket.socket) -> bytes:
    sock.settimeout(BOUND)
    received = bytearray()
    deadline = time.monotonic() + BOUND
    while not received.endswith(b"0\r\n\r\n") and time.monotonic() < deadline:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        received += chunk
    return bytes(received)


async def test_a_client_that_stops_reading_does_not_delay_another(
    settings: Settings,
    repo: Repository,
    temporal_env: WorkflowEnvironment,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"http slow reader {run_id}"
    # About 400 kB of stream (the deltas, then the whole text again in message.completed):
    # far more than a stalled connection's socket buffers and uvicorn's write buffer hold.
    model_server.script(prompt, [Reply(text="word " * 40_000, chunk_chars=2_000, delay_s=0.01)])
    port = free_port()
    _, token = await repo.create_api_key(f"slow-{port}", "app", list(Scope))
    server = build_server(
        settings, repo=repo, client=temporal_env.client, host="127.0.0.1", port=port
    )
    task = asyncio.create_task(server.serve())
    await wait_started(server, task, timeout=BOUND)
    stalled: socket.socket | None = None
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=BOUND) as http:
            rid = (await start(http, token, prompt, config={"tools": []}))["run_id"]
            stalled = _stalled_reader(port, f"/v1/runs/{rid}/events", token)
            await asyncio.wait_for(_narrow(server, stalled.getsockname()[1]), BOUND)
            started = time.monotonic()
            events = await sse_events(http, rid, token)
            took = time.monotonic() - started
        assert data(events[-1])["status"] == RunStatus.DONE, (events[-1], took)
        assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
        # The stalled connection is still held back by its own flow control.
        paused = [c for c in server.server_state.connections if c.flow and c.flow.write_paused]
        assert len(paused) == 1, [
            (c.flow.write_paused, c.transport.get_write_buffer_size())
            for c in server.server_state.connections
        ]
        # Reading again, it gets the whole stream, the last event included.
        missed = await asyncio.to_thread(_read_to_the_end, stalled)
        assert f"id: {len(events)}\r\nevent: {EventType.RUN_STATUS}".encode() in missed or (
            f"id: {len(events)}\nevent: {EventType.RUN_STATUS}".encode() in missed
        ), missed[-300:]
    finally:
        if stalled is not None:
            stalled.close()
        server.should_exit = True
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), BOUND)
