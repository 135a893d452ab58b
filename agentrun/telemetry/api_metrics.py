"""The HTTP API's own telemetry: GET /metrics on the API's port (Prometheus text; no key, like
/healthz: it names no tenant, run or session), the SSE followers gauge, and, when tracing is on,
a server span per request (the FastAPI instrumentation, which also continues a caller's
`traceparent`), so a run started over HTTP is one trace from the request on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, TypeVar

from fastapi import APIRouter, Request, Response

from agentrun.telemetry import tracing

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["SSE_FOLLOWERS", "ApiMetrics", "followed", "install", "router"]

SSE_FOLLOWERS = "agentrun_sse_followers"
T = TypeVar("T")
router = APIRouter(tags=["health"])


class ApiMetrics:
    """One registry per app (tests make many apps in one process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Gauge, PlatformCollector, ProcessCollector

        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.followers = Gauge(
            SSE_FOLLOWERS, "Event streams (SSE) open on this server", registry=self.registry
        )


def install(app: FastAPI) -> None:
    app.state.metrics = ApiMetrics()
    app.include_router(router)
    current = tracing.provider()
    if current is not None:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=current, excluded_urls="healthz,readyz,metrics"
        )


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


async def followed(request: Request, stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """`stream`, counted in the SSE followers gauge while it is open."""
    gauge = request.app.state.metrics.followers
    gauge.inc()
    try:
        async for item in stream:
            yield item
    finally:
        gauge.dec()
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
