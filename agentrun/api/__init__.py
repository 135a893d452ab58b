"""The HTTP API (`agentrun serve`): FastAPI over agentrun.client and the store. See the README's
"HTTP API" section; the bodies are the pydantic models of agentrun.protocol.http.

    app.py         create_app: routes, lifespan (Temporal client, store), middlewares
    auth.py        bearer keys, scopes
    lookups.py     tenant-scoped run and session lookups (another tenant's is a 404)
    runs.py        start (idempotent), list, get, cancel
    events.py      the event stream (SSE) and its JSON page
    calls.py       decisions and client-side results
    sessions.py    a session's transcript
    health.py      /healthz, /readyz
    problems.py    RFC 9457 problem documents for every error
    middleware.py  the body limit (413) and an access log without query strings
    server.py      uvicorn: the server `agentrun serve` and `agentrun dev` run
"""

from __future__ import annotations

from agentrun.api.app import create_app

__all__ = ["create_app"]
