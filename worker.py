"""The agentrun worker: wiring only. A client with agentrun's data converter (pydantic, plus
payload encryption when keys are set), and a worker with every workflow and activity, run as a
version of a Worker Deployment with runs pinned to the build they started on. SIGTERM or SIGINT
shut it down gracefully: it stops polling and gives running activities a grace period to
finish."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.worker import Worker

from activities.errors import NonRetryableDataErrors
from activities.mcp_tools import McpTools
from activities.model import ModelActivities
from activities.retention import RetentionActivities
from activities.runs import RunActivities
from activities.sessions import SessionQueueActivities
from activities.tool_exec import ToolActivities
from activities.tools import ToolRegistry, default_registry
from activities.webhook_dispatch import WebhookDispatcher, webhook_task_queue
from activities.webhooks import WebhookActivities
from agentrun.converter import data_converter
from agentrun.db.migrate import upgrade
from agentrun.deployment import deployment_config, promote_on_start
from agentrun.mcp.config import McpConfigError, servers_of
from agentrun.mcp.pool import McpPool
from agentrun.process import exit_process
from agentrun.retention import sync_retention_schedule
from agentrun.settings import Settings, SettingsError, load_settings
from agentrun.stack import StackError, require_search_attributes
from agentrun.store import Repository
from agentrun.telemetry import tracing
from agentrun.telemetry.worker import ApprovalsGauge, MetricsPortError, process_port, worker_runtime
from agentrun.testing.offline_model import OfflineModelServer
from agentrun.worker_processes import ChildFailed, supervise
from workflows import ALL_WORKFLOWS, SANDBOX_RUNNER, WEBHOOK_WORKFLOWS

log = logging.getLogger("agentrun.worker")

# Webhook POSTs in flight at once per worker process.
MAX_CONCURRENT_DELIVERIES = 20
# `--processes`: more than the cores of any one machine is a mistake, not a plan.
MAX_PROCESSES = 64


async def connect_client(settings: Settings, runtime: Runtime | None = None) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        # Tracing (when OTEL_* asks for it) on the client; the workers built on it inherit it.
        interceptors=tracing.client_interceptors(),
        runtime=runtime,
    )


def build_worker(
    client: Client,
    settings: Settings,
    repo: Repository,
    *,
    registry: ToolRegistry | None = None,
    task_queue: str | None = None,
    graceful_shutdown: timedelta = timedelta(seconds=30),
    extra_workflows: Sequence[type] = (),
    extra_activities: Sequence[Callable[..., Any]] = (),
    mcp_pool: McpPool | None = None,
) -> Worker:
    """`mcp_pool`: the process's MCP connections (made from the settings when None; its
    owner closes it when the worker stops, as run_worker does)."""
    registry = registry or default_registry()
    tracing.set_capture_content(settings.otel_capture_content)
    runs = RunActivities(repo, settings, registry)
    model = ModelActivities(repo, settings, registry)
    retention = RetentionActivities(repo, client)
    mcp = McpTools(
        repo, mcp_pool or McpPool(servers_of(settings)), registry, settings.approval_floor
    )
    tools = ToolActivities(repo, registry, settings=settings, mcp=mcp)
    queue = SessionQueueActivities(repo, settings)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=[*ALL_WORKFLOWS, *extra_workflows],
        workflow_runner=SANDBOX_RUNNER,
        activities=[
            runs.open_run,
            runs.set_status,
            runs.request_waits,
            runs.record_decision,
            runs.append_event,
            runs.request_cancel,
            runs.resume_run,
            model.model_turn,
            tools.execute_tool,
            tools.record_tool_outcome,
            mcp.list_mcp_tools,
            retention.delete_idle_sessions,
            retention.prune_webhook_deliveries,
            queue.advance_session_queue,
            *extra_activities,
        ],
        max_concurrent_activities=settings.max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
        graceful_shutdown_timeout=graceful_shutdown,
        interceptors=[NonRetryableDataErrors()],
        # Heartbeats carry cancellation to a running activity; sending them at least every
        # second makes a cancel stop a stream or a tool within about a second.
        max_heartbeat_throttle_interval=timedelta(seconds=1),
        # None (AGENTRUN_WORKER_VERSIONING=false): an unversioned worker.
        deployment_config=deployment_config(settings),
    )


def build_webhook_worker(
    client: Client,
    settings: Settings,
    repo: Repository,
    *,
    task_queue: str | None = None,
    graceful_shutdown: timedelta = timedelta(seconds=15),
) -> Worker:
    """The worker of webhook deliveries (README "Webhooks"): its own task queue and activity
    slots, so receivers that are slow or down never hold up a run's activities."""
    webhooks = WebhookActivities(repo, settings)
    return Worker(
        client,
        task_queue=task_queue or webhook_task_queue(settings.task_queue),
        workflows=WEBHOOK_WORKFLOWS,
        activities=[webhooks.deliver_webhook, webhooks.record_webhook_failure],
        max_concurrent_activities=MAX_CONCURRENT_DELIVERIES,
        graceful_shutdown_timeout=graceful_shutdown,
        interceptors=[NonRetryableDataErrors()],
        deployment_config=deployment_config(settings),
    )


async def run_worker(
    settings: Settings,
    stop: asyncio.Event,
    *,
    migrate: bool = True,
    ready: asyncio.Event | None = None,
    registry: ToolRegistry | None = None,
    on_polling: Callable[[Settings], None] | None = None,
    extra_workflows: Sequence[type] = (),
    extra_activities: Sequence[Callable[..., Any]] = (),
) -> None:
    """Run a worker until `stop` is set, then shut it down gracefully. `registry`: the tools
    (default: the built-ins); `on_polling` is called with the worker's settings (its model
    endpoint filled in) once it polls."""
    mcp_pool = McpPool(servers_of(settings))  # a bad MCP declaration stops start-up here
    if migrate:
        await asyncio.to_thread(upgrade, settings.sqlalchemy_url)
    offline: OfflineModelServer | None = None
    if settings.uses_offline_model:
        # No model endpoint configured: this worker carries agentrun's offline model.
        offline = OfflineModelServer(tokens_per_second=settings.offline_tokens_per_second).start()
        settings = settings.model_copy(update={"openai_base_url": offline.base_url})
        log.warning(
            "no OPENAI_BASE_URL set: using agentrun's offline scripted model at %s",
            offline.base_url,
        )
    try:
        tracing.configure_tracing("agentrun-worker")
        runtime = worker_runtime(settings)  # /metrics on AGENTRUN_METRICS_PORT, or None
        client = await connect_client(settings, runtime)
        # Runs cannot upsert attributes the namespace does not know: refuse to start rather
        # than take runs that would stall (Temporal Cloud: register them by hand, README).
        await require_search_attributes(client)
    except BaseException:
        if offline is not None:
            offline.stop()
        raise
    repo = Repository.connect(settings.sqlalchemy_url)
    registry = registry or default_registry()
    worker = build_worker(
        client,
        settings,
        repo,
        registry=registry,
        extra_workflows=extra_workflows,
        extra_activities=extra_activities,
        mcp_pool=mcp_pool,
    )
    webhooks = build_webhook_worker(client, settings, repo)
    try:
        # Clients check a run's tool names against what the workers of its queue offer.
        await repo.publish_tools(settings.task_queue, registry.names)
        async with worker, webhooks:
            log.info(
                "worker polling task queue %r; model %s at %s",
                settings.task_queue,
                settings.model,
                settings.model_endpoint,
            )
            await promote_on_start(client, settings)
            await sync_retention_schedule(client, settings)
            if on_polling is not None:
                on_polling(settings)
            if ready is not None:
                ready.set()
            # Each worker process starts the deliveries of the webhook outbox.
            async with WebhookDispatcher(client, repo, webhooks.task_queue):
                async with ApprovalsGauge(repo, runtime):
                    await stop.wait()
            log.info("shutting down: finishing in-flight tasks")
    finally:
        await mcp_pool.close()  # stdio MCP servers end with the worker
        await repo.close()
        if offline is not None:
            offline.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="agentrun-worker",
        description="Run an agentrun worker (settings from the environment).",
    )
    parser.add_argument("--task-queue", help="override AGENTRUN_TASK_QUEUE")
    parser.add_argument("--max-concurrent-activities", type=int)
    parser.add_argument("--max-concurrent-workflow-tasks", type=int)
    parser.add_argument("--no-migrate", action="store_true", help="skip the database migrations")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="run N worker processes on this machine, each a full worker, started and stopped "
        "together (default 1; one process uses about one core)",
    )
    parser.add_argument("--process-index", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"event": "polling", ...} on stdout once polling, {"event": "stopped"} at '
        "the end (logs stay on stderr)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.processes <= MAX_PROCESSES:
        parser.error(f"--processes: between 1 and {MAX_PROCESSES}, got {args.processes}")
    overrides = {
        k: v
        for k, v in {
            "task_queue": args.task_queue,
            "max_concurrent_activities": args.max_concurrent_activities,
            "max_concurrent_workflow_tasks": args.max_concurrent_workflow_tasks,
        }.items()
        if v is not None
    }
    index = f"[{args.process_index}] " if args.process_index else ""
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s {index}%(name)s: %(message)s"
    )
    try:
        settings = process_port(load_settings(**overrides), args.process_index)
        servers_of(settings)  # a bad MCP declaration: say so before anything starts
    except (SettingsError, McpConfigError, MetricsPortError) as exc:
        sys.exit(f"agentrun-worker: {exc}")

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if args.processes > 1:
            await run_processes(
                settings,
                stop,
                args.processes,
                _child_args(args),
                migrate=not args.no_migrate,
                json_out=args.json,
            )
            return
        await run_worker(
            settings,
            stop,
            migrate=not args.no_migrate,
            on_polling=(lambda s: _json_line(polling_record(s))) if args.json else None,
        )

    try:
        asyncio.run(_main())
    except (OSError, RuntimeError, StackError) as exc:
        print(f"agentrun-worker: {exc}", file=sys.stderr)
        exit_process(1)
    if args.json:
        _json_line({"event": "stopped", "task_queue": settings.task_queue})
    exit_process(0)


def _child_args(args: argparse.Namespace) -> list[str]:
    """A child's command-line options: the parent's overrides; it never migrates."""
    out = ["--no-migrate", "--json"]
    for flag, value in (
        ("--task-queue", args.task_queue),
        ("--max-concurrent-activities", args.max_concurrent_activities),
        ("--max-concurrent-workflow-tasks", args.max_concurrent_workflow_tasks),
    ):
        if value is not None:
            out += [flag, str(value)]
    return out


async def run_processes(
    settings: Settings,
    stop: asyncio.Event,
    n: int,
    child_args: list[str],
    *,
    migrate: bool = True,
    json_out: bool = False,
) -> None:
    """`--processes N`: migrate once, then N full workers (agentrun.worker_processes). Without
    a model endpoint this process carries the one offline model they all call."""
    if migrate:
        await asyncio.to_thread(upgrade, settings.sqlalchemy_url)
    env = dict(os.environ)
    offline: OfflineModelServer | None = None
    if settings.uses_offline_model:
        offline = OfflineModelServer(tokens_per_second=settings.offline_tokens_per_second).start()
        settings = settings.model_copy(update={"openai_base_url": offline.base_url})
        env.update({"OPENAI_BASE_URL": offline.base_url, "AGENTRUN_MODEL": settings.model})
        log.warning("no OPENAI_BASE_URL set: the workers use agentrun's offline scripted model")

    def polling(pids: list[int]) -> None:
        log.info("%d worker processes polling task queue %r: pids %s", n, settings.task_queue, pids)
        if json_out:
            _json_line({**polling_record(settings), "processes": n, "pids": pids})

    command = [sys.executable, "-c", "from worker import main; main()", *child_args]
    try:
        await supervise(
            [[*command, "--process-index", str(i + 1)] for i in range(n)],
            stop,
            env=env,
            on_polling=polling,
        )
    except ChildFailed as exc:
        raise RuntimeError(str(exc)) from None
    finally:
        if offline is not None:
            offline.stop()


def polling_record(settings: Settings) -> dict[str, Any]:
    """What a polling worker reports on `--json`: where it takes runs from and which model
    it calls (the endpoint without secrets; never the key)."""
    return {
        "event": "polling",
        "task_queue": settings.task_queue,
        "temporal": settings.temporal_address,
        "namespace": settings.temporal_namespace,
        "model": settings.model,
        "model_endpoint": settings.model_endpoint,
    }


def _json_line(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
