"""Fixtures of tests/test_http_*.py (loaded with `pytest_plugins = ["tests.http_fixtures"]`):
a real uvicorn server on 127.0.0.1 (a free port) serving agentrun.api over the session's
Temporal dev server and PostgreSQL, in the test's event loop; API keys of two tenants; an httpx
client."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from agentrun.api.server import build_server, wait_started
from agentrun.protocol.statuses import Scope
from agentrun.settings import Settings
from agentrun.stack import free_port
from agentrun.store import Repository
from tests.http_support import BOUND, HEARTBEAT_S, Keys


@pytest.fixture
async def api(
    settings: Settings, repo: Repository, temporal_env: WorkflowEnvironment
) -> AsyncIterator[str]:
    """The base URL of a uvicorn server running agentrun.api in this event loop."""
    port = free_port()
    tuned = settings.model_copy(update={"http_heartbeat_s": HEARTBEAT_S, "http_port": port})
    server = build_server(tuned, repo=repo, client=temporal_env.client, host="127.0.0.1")
    task = asyncio.create_task(server.serve())
    await wait_started(server, task, timeout=BOUND)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), BOUND)


@pytest.fixture
async def keys(repo: Repository) -> Keys:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    other = f"o-{uuid.uuid4().hex[:10]}"
    full_info, full = await repo.create_api_key(tenant, "app", list(Scope))
    _, read_only = await repo.create_api_key(tenant, "viewer", [Scope.READ])
    _, writer = await repo.create_api_key(tenant, "starter", [Scope.READ, Scope.WRITE])
    _, other_key = await repo.create_api_key(other, "intruder", list(Scope))
    _, revoked = await repo.create_api_key(tenant, "old", list(Scope))
    await repo.revoke_api_key("old", tenant=tenant)
    return Keys(tenant, full, full_info.name, read_only, writer, other_key, revoked)


@pytest.fixture
async def http(api: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api, timeout=BOUND) as client:
        yield client
