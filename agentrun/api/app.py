"""The FastAPI app: routes, problem documents, the body limit, the access log, and a lifespan
that connects what it was not given (a Temporal client with agentrun's data converter, the
store) and closes only what it opened."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from temporalio.client import Client

from agentrun.api import budget, calls, events, health, problems, queue, runs, sessions, usage
from agentrun.api.middleware import AccessLog, BodyLimit
from agentrun.telemetry import api_metrics, tracing
from agentrun.web import STATIC_DIR

if TYPE_CHECKING:
    from agentrun.settings import Settings
    from agentrun.store import Repository

DESCRIPTION = """Start agent runs, follow their events live (Server-Sent Events), approve or
reject their tool calls, hand back client-side tool results and cancel them.

Every /v1 endpoint takes `Authorization: Bearer <API key>` (`agentrun keys create`); a key
holds scopes (read, write, approve) and belongs to one tenant, and sees that tenant's runs and
sessions only. Errors are RFC 9457 problem documents (application/problem+json)."""


def create_app(
    settings: Settings, *, repo: Repository | None = None, client: Client | None = None
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from agentrun.client import connect
        from agentrun.db.migrate import head_revision
        from agentrun.store import Repository

        own_repo = repo is None
        # No overflow: however many clients, the process holds pool + 1 (LISTEN) connections.
        store = repo or Repository.connect(settings.sqlalchemy_url, max_overflow=0)
        try:
            temporal = client if client is not None else await connect(settings)
            app.state.settings = settings
            app.state.repo = store
            app.state.temporal = temporal
            app.state.schema_head = await asyncio.to_thread(head_revision)
            # Set when the server shuts down: open event streams end then (see server.Server).
            app.state.draining = asyncio.Event()
            yield
        finally:
            if own_repo:
                await store.close()

    app = FastAPI(
        title="agentrun",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    problems.install(app)
    tracing.configure_tracing("agentrun-api")
    api_metrics.install(app)  # GET /metrics, the SSE gauge, request spans (README "Observability")
    for module in (runs, events, calls, sessions, queue, budget, usage, health):
        app.include_router(module.router)
    # The web page (agentrun.web) at /, after every route: the API keeps its paths.
    app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="web")
    # Outermost first: the access log sees the 413s too.
    app.add_middleware(BodyLimit, limit=settings.http_max_body_bytes)
    app.add_middleware(AccessLog)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("agentrun")
    except PackageNotFoundError:
        return "0"
