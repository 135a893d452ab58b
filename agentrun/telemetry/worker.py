"""A worker's telemetry wiring: the Temporal runtime that serves /metrics on
AGENTRUN_METRICS_PORT (one port per process: `agentrun worker --processes N` gives process i
the port AGENTRUN_METRICS_PORT + i - 1), and the approvals-waiting gauge it refreshes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TYPE_CHECKING, Any

from agentrun.telemetry import metrics

if TYPE_CHECKING:
    from temporalio.runtime import Runtime

    from agentrun.settings import Settings

log = logging.getLogger("agentrun.telemetry")

# The gauge counts the whole database's waiting calls: every worker reports the same figure
# (the dashboard takes the max), refreshed this often.
APPROVALS_REFRESH_S = 15.0


class MetricsPortError(RuntimeError):
    pass


def metrics_url(settings: Settings) -> str | None:
    if settings.metrics_port is None:
        return None
    host = settings.metrics_host
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown}:{settings.metrics_port}/metrics"


def process_port(settings: Settings, process_index: int | None) -> Settings:
    """The settings of worker process `process_index` (1-based) of `--processes N`."""
    if settings.metrics_port is None or not process_index:
        return settings
    port = settings.metrics_port + process_index - 1
    if port > 65535:
        raise MetricsPortError(f"AGENTRUN_METRICS_PORT: process {process_index} needs port {port}")
    return settings.model_copy(update={"metrics_port": port})


# `agentrun dev` serves the worker's metrics here unless AGENTRUN_METRICS_PORT says otherwise
# (or, when this port is taken, on a free one: it prints the URL).
DEV_METRICS_PORT = 9464


def dev_metrics(settings: Settings) -> Settings:
    if settings.metrics_port is not None:
        return settings
    port = DEV_METRICS_PORT if _free(settings.metrics_host, DEV_METRICS_PORT) else 0
    if port == 0:
        with socket.socket() as s:
            s.bind((settings.metrics_host, 0))
            port = s.getsockname()[1]
    return settings.model_copy(update={"metrics_port": port})


def _free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def worker_runtime(settings: Settings) -> Runtime | None:
    """The runtime with a Prometheus endpoint, or None (metrics off: the default runtime)."""
    if settings.metrics_port is None:
        return None
    host, port = settings.metrics_host, settings.metrics_port
    # Checked first, so the worker stops with a message that names the setting.
    if not _free(host, port):
        raise MetricsPortError(
            f"AGENTRUN_METRICS_PORT: cannot serve metrics on {host}:{port}: the port is in use"
        )
    runtime = metrics.prometheus_runtime(host, port)
    log.info("metrics on %s", metrics_url(settings))
    return runtime


# Its WHERE is the predicate of the partial index of migration 0012: the count reads only the
# calls that wait, never the whole table (tests/test_ops_hardening.py checks the planner).
APPROVALS_WAITING_SQL = "SELECT count(*) FROM tool_calls WHERE status = 'pending_approval'"


class ApprovalsGauge:
    """agentrun_approvals_waiting from the database, refreshed in the background while the
    worker runs (nothing when metrics are off)."""

    def __init__(self, repo: Any, runtime: Runtime | None, every_s: float = APPROVALS_REFRESH_S):
        self.repo, self.runtime, self.every_s = repo, runtime, every_s
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> int:
        from sqlalchemy import text

        async with self.repo.engine.connect() as conn:
            result = await conn.execute(text(APPROVALS_WAITING_SQL))
            count = int(result.scalar() or 0)
        if self.runtime is not None:
            metrics.set_approvals_waiting(self.runtime.metric_meter, count)
        return count

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # a database outage: the next round tries again
                log.debug("approvals gauge not refreshed: %s", type(exc).__name__)
            await asyncio.sleep(self.every_s)

    async def __aenter__(self) -> ApprovalsGauge:
        if self.runtime is not None:
            self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
