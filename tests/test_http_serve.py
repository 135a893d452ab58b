"""`agentrun serve` as a process: it checks Temporal and PostgreSQL, listens where the settings
say, answers /readyz and a keyed request, and stops cleanly on SIGTERM; a port in use is one
clear error line and exit code 3. A server that stops ends its open event streams at once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.api.server import build_server, wait_started
from agentrun.client import cancel_run
from agentrun.protocol.events import EventType
from agentrun.protocol.statuses import Scope
from agentrun.settings import Settings
from agentrun.stack import free_port
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply
from tests.conftest import bash_call
from tests.http_support import bearer, sse_events, start

BOUND = 60


def _env(settings: Settings, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "AGENTRUN_DATABASE_URL": settings.database_url,
        "AGENTRUN_TASK_QUEUE": settings.task_queue,
        "AGENTRUN_DATA_DIR": str(settings.data_dir),
        "AGENTRUN_HTTP_PORT": str(port),
        "COLUMNS": "200",
    }


def _serve(env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from starter.cli import main; main()", "serve", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _get(url: str, token: str | None = None) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def test_agentrun_serve_listens_answers_and_stops(
    settings: Settings, repo: Repository, tmp_path: Path
) -> None:
    port = free_port()
    _, token = await repo.create_api_key(f"serve-{port}", "probe", [Scope.READ])
    proc = _serve(_env(settings, port), tmp_path, "--json")
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + BOUND
        line = proc.stdout.readline()
        assert time.monotonic() < deadline and line, proc.stderr.read() if proc.stderr else ""
        listening = json.loads(line)
        url = f"http://127.0.0.1:{port}"
        assert listening == {"event": "listening", "url": url, "docs": f"{url}/docs"}
        assert _get(f"{url}/readyz")[0] == 200
        assert _get(f"{url}/v1/runs", token) == (200, {"runs": [], "next_cursor": None})
        status, problem = _get(f"{url}/v1/runs")
        assert status == 401 and problem["status"] == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(BOUND) == 0
        assert json.loads(proc.stdout.read().strip().splitlines()[-1]) == {"event": "stopped"}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(BOUND)


def test_a_port_in_use_is_one_clear_error(settings: Settings, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve(_env(settings, port), tmp_path)
        _, err = proc.communicate(timeout=BOUND)
    assert proc.returncode == 3
    assert f"127.0.0.1:{port}" in err and "AGENTRUN_HTTP_PORT" in err
    assert len(err.strip().splitlines()) == 1


async def test_open_event_streams_end_when_the_server_stops(
    settings: Settings,
    repo: Repository,
    temporal_env: WorkflowEnvironment,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"http drain {run_id}"
    model_server.script(prompt, [bash_call("echo drain", "call_d"), Reply(text="Drained.")])
    port = free_port()
    _, token = await repo.create_api_key(f"drain-{port}", "app", list(Scope))
    server = build_server(
        settings, repo=repo, client=temporal_env.client, host="127.0.0.1", port=port
    )
    task = asyncio.create_task(server.serve())
    await wait_started(server, task, timeout=BOUND)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=BOUND) as http:
        rid = (await start(http, token, prompt, config={"workspace": str(tmp_path)}))["run_id"]
        asked = EventType.TOOL_APPROVAL_REQUESTED.value
        await sse_events(http, rid, token, until_type=asked)

        replayed = asyncio.Event()

        async def follow() -> list[str]:
            got = []
            async with aconnect_sse(
                http, "GET", f"/v1/runs/{rid}/events", headers=bearer(token)
            ) as source:
                async for sse in source.aiter_sse():
                    got.append(sse.event)
                    if sse.event == asked:
                        replayed.set()
            return got

        stream = asyncio.create_task(follow())
        await asyncio.wait_for(replayed.wait(), BOUND)
        stopping = time.monotonic()
        server.should_exit = True
        got = await asyncio.wait_for(stream, BOUND)
        # Well inside uvicorn's 5 s grace period: the stream was ended, not cut off late.
        assert time.monotonic() - stopping < 3, time.monotonic() - stopping
        assert asked in got and EventType.RUN_STATUS.value in got
    await asyncio.wait_for(task, BOUND)
    await cancel_run(temporal_env.client, rid, reason="test over")
