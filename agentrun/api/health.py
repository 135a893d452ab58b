"""GET /healthz (the process answers) and GET /readyz (Temporal answers, PostgreSQL answers and
its schema is at the migrations' head: a server in front of an unmigrated database is not
ready). Neither needs a key: they say nothing about any tenant."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from agentrun.api.lookups import services
from agentrun.protocol.http import PROBLEM_MEDIA_TYPE, Health, Readiness

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 5.0


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"description": "Not ready: `checks` says what is missing."}},
)
async def readyz(request: Request) -> Any:
    svc = services(request)
    head = request.app.state.schema_head
    temporal, database = await asyncio.gather(
        _temporal(svc.temporal), _database(svc.repo, head), return_exceptions=False
    )
    checks = {"temporal": temporal, "postgresql": database}
    ready = all(v == "ok" for v in checks.values())
    if ready:
        return Readiness(status="ready", checks=checks)
    failing = "; ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")
    return JSONResponse(
        {
            "type": "about:blank",
            "title": "Service Unavailable",
            "status": 503,
            "detail": f"not ready: {failing}",
            "checks": checks,
        },
        status_code=503,
        media_type=PROBLEM_MEDIA_TYPE,
    )


async def _temporal(client: Any) -> str:
    try:
        ok = await asyncio.wait_for(
            client.service_client.check_health(timeout=timedelta(seconds=CHECK_TIMEOUT_S)),
            CHECK_TIMEOUT_S + 1,
        )
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok" if ok else "not serving"


async def _database(repo: Any, head: str | None) -> str:
    async def current() -> str | None:
        async with repo.engine.connect() as conn:
            row = await conn.execute(text("SELECT version_num FROM alembic_version"))
            return row.scalar()

    try:
        revision = await asyncio.wait_for(current(), CHECK_TIMEOUT_S)
    except Exception as exc:
        return f"unreachable or not migrated ({type(exc).__name__})"
    if revision != head:
        return f"schema at {revision}, expected {head}: run `agentrun db upgrade`"
    return "ok"
