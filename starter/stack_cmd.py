"""`agentrun dev` and `agentrun demo`: one lifecycle for the embedded stack. Bring up (or reuse)
Temporal and PostgreSQL, run a worker in this process, and on the way out stop the worker and
whatever this process started, never what it reused."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client

from agentrun.contracts import AgentConfig
from agentrun.devstack import DevStack
from agentrun.settings import Settings
from agentrun.telemetry.worker import dev_metrics, metrics_url
from starter.commands.serve import ApiState
from starter.commands.start import start_and_follow
from starter.connect import settings_or_exit, temporal
from starter.exits import EXIT_OK, EXIT_USAGE, CliError
from starter.mcp_check import mcp_servers_or_exit
from starter.output import console, exit_for, print_json, web_ui_link


@contextlib.asynccontextmanager
async def embedded_stack(
    settings: Settings,
    *,
    starting: str,
    note: str,
    stopping: str | None = None,
    as_json: bool = False,
) -> AsyncIterator[DevStack]:
    """The stack up (each note printed with `note`, a format of one field) until the block
    ends; then what this process started is stopped. With `as_json` nothing is printed here
    but {"event": "stopped"} at the end."""
    stack = DevStack(settings)
    ready = False
    try:
        with contextlib.nullcontext() if as_json else console.status(starting):
            await stack.up()
        ready = True
        for line in [] if as_json else stack.notes:
            console.print(note.format(line))
        yield stack
    finally:
        if stopping and not as_json:
            with console.status(stopping):
                await asyncio.to_thread(stack.down)
            console.print("stopped.")
        else:
            await asyncio.to_thread(stack.down)
        if as_json and ready:
            print_json({"event": "stopped"})


@contextlib.asynccontextmanager
async def worker_running(
    settings: Settings, *, reuse: Client | None = None, quiet: bool = False
) -> AsyncIterator[WorkerState]:
    """A worker in this process, ready when the block starts and stopped when it ends. With
    `reuse`, a worker already polling the task queue is used instead (its task is None)."""
    from worker import run_worker

    stop, ready = asyncio.Event(), asyncio.Event()
    state = WorkerState()
    if reuse is not None and await _worker_polling(reuse, settings.task_queue):
        if not quiet:
            console.print(f"[dim]• a worker is already polling {settings.task_queue!r}[/]")
    else:
        state.task = asyncio.create_task(
            run_worker(settings, stop, migrate=False, ready=ready, on_polling=state.polling)
        )
        await asyncio.wait(
            [state.task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        if state.task.done():
            state.task.result()
    try:
        yield state
    finally:
        stop.set()
        if state.task is not None:
            await asyncio.gather(state.task, return_exceptions=True)


@dataclass
class WorkerState:
    """The in-process worker's task (None: another worker was reused) and the settings it
    runs with (its model endpoint filled in, the offline model's too)."""

    task: asyncio.Task[None] | None = None
    settings: Settings | None = None

    def polling(self, settings: Settings) -> None:
        self.settings = settings


def ready_record(
    settings: Settings, stack: DevStack, worker: WorkerState | None
) -> dict[str, object]:
    """The `--json` line of dev and demo once everything is up: where each part answers (the
    database without its password, the model endpoint without its key)."""
    model = worker.settings if worker is not None and worker.settings is not None else settings
    return {
        "event": "ready",
        "temporal": settings.temporal_address,
        "namespace": settings.temporal_namespace,
        "web_ui": stack.ui_url,
        "postgresql": settings.database_url_display,
        "task_queue": settings.task_queue,
        "worker": "in-process"
        if worker is not None and worker.task is not None
        else ("reused" if worker is not None else None),
        "model": model.model,
        "model_endpoint": model.model_endpoint,
        "started": {
            "temporal": stack.temporal is not None,
            "postgresql": stack.postgres is not None,
        },
        "data_dir": str(stack.data_dir),
    }


def stop_requested() -> asyncio.Event:
    """An event set by Ctrl-C or SIGTERM from now on (install it before saying "Ctrl-C")."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def until_stopped(stop: asyncio.Event, worker: asyncio.Task[None] | None = None) -> None:
    """Wait for `stop` (or the worker's end: its error is raised)."""
    stopped = asyncio.create_task(stop.wait())
    waits: list[asyncio.Future[Any]] = [stopped]
    if worker is not None:
        waits.append(worker)
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if worker is not None and worker.done():
        worker.result()


async def _worker_polling(client: Client, task_queue: str) -> bool:
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    resp = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        )
    )
    return len(resp.pollers) > 0


# -- agentrun dev ------------------------------------------------------------------------------


async def cmd_dev(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    mcp_servers_or_exit(settings)  # its worker's MCP servers: refused before anything starts
    stop = stop_requested()
    async with embedded_stack(
        settings,
        starting="starting the agentrun stack...",
        note="  [green]•[/] {}",
        stopping="stopping...",
        as_json=args.json,
    ) as stack:
        async with contextlib.AsyncExitStack() as running:
            api = None
            if not args.no_api:
                from starter.commands.serve import api_running

                api = await running.enter_async_context(api_running(settings))
            if args.no_worker:
                _dev_ready(settings, stack, None, args.json, api)
                await until_stopped(stop)
                return EXIT_OK
            metered = dev_metrics(settings)  # the worker's /metrics (README "Observability")
            worker = await running.enter_async_context(worker_running(metered))
            _dev_ready(settings, stack, worker, args.json, api)
            await until_stopped(stop, worker.task)
    return EXIT_OK


def _dev_ready(
    settings: Settings,
    stack: DevStack,
    worker: WorkerState | None,
    as_json: bool,
    api: ApiState | None = None,
) -> None:
    if as_json:
        record = ready_record(settings, stack, worker)
        if api is not None:
            record["api"] = api.url
            record["api_docs"] = f"{api.url}/docs" if api.url else None
            record["api_key"] = api.key
            record["web_page"] = f"{api.url}/#key={api.key}" if api.url else None
            record["api_problem"] = api.problem
        record["metrics"] = metrics_url(worker.settings) if worker and worker.settings else None
        print_json(record)
        return
    if stack.postgres is None and stack.temporal is None:
        console.print("[bold]A stack is already running; reusing it.[/]")
    console.print(
        f"[bold green]agentrun stack ready[/] in {stack.started_in_s:.1f}s\n"
        f"  Temporal   {settings.temporal_address} (namespace {settings.temporal_namespace})\n"
        f"  Web UI     {stack.ui_url}\n"
        f"  PostgreSQL {settings.database_url_display}\n"
        f"  Model      {_model_line(settings)}"
    )
    if api is not None and api.url:
        console.print(
            f"  HTTP API   {api.url} (docs {api.url}/docs)\n"
            f"  Dev key    {api.key} (tenant default, every scope; kept in "
            f"{settings.data_dir}/dev-api-key)\n"
            f"  Web page   {api.url}/#key={api.key}",
            soft_wrap=True,
        )
    elif api is not None:
        console.print(f"  HTTP API   [yellow]not started: {api.problem}[/]")
    if worker is not None and worker.settings is not None and worker.task is not None:
        api_metrics = f", API {api.url}/metrics" if api is not None and api.url else ""
        url = metrics_url(worker.settings)
        console.print(f"  Metrics    worker {url}{api_metrics}", soft_wrap=True)
    if worker is None:
        console.print("Press Ctrl-C to stop.")
    else:
        console.print(f"  Worker     polling task queue {settings.task_queue!r}; Ctrl-C stops all")


def _model_line(settings: Settings) -> str:
    if settings.uses_offline_model:
        return (
            "offline scripted model (for a real one, set OPENAI_BASE_URL, OPENAI_API_KEY and "
            "AGENTRUN_MODEL here and restart: the worker calls the model)"
        )
    return f"{settings.model} at {settings.openai_base_url}"


# -- agentrun demo -----------------------------------------------------------------------------


def _demo_workspace(settings: Settings) -> Path:
    workspace = settings.tool_workspace_root / "demo"  # tools work only under the root
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "notes.txt").write_text("agentrun demo workspace\nsecond line\n")
    (workspace / "plan.md").write_text("# Plan\n1. list files\n2. multiply\n3. count lines\n")
    return workspace


async def cmd_demo(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    mcp_servers_or_exit(settings)  # its worker's MCP servers: refused before anything starts
    interactive = sys.stdin.isatty() and not args.yes and not args.json
    if not interactive and not args.yes and not settings.uses_offline_model:
        # Approvals are only given for the user against the offline model, whose tool calls
        # are scripted; a real model's calls need a person or an explicit --yes.
        raise CliError(
            f"no terminal to ask for approvals at (or --json), and a real model "
            f"({settings.model} at {settings.model_endpoint}) is configured: run the demo at a "
            "terminal, or pass --yes to approve every call it makes",
            EXIT_USAGE,
        )
    async with embedded_stack(
        settings,
        starting="bringing up the embedded stack (Temporal + PostgreSQL)...",
        note="[dim]• {}[/]",
        as_json=args.json,
    ) as stack:
        say = _quiet if args.json else console.print
        if settings.uses_offline_model:
            say(
                "[yellow]No model configured: using agentrun's offline scripted model. Set "
                "OPENAI_BASE_URL, OPENAI_API_KEY and AGENTRUN_MODEL for a real one.[/]"
            )
        workspace = _demo_workspace(settings)
        client = await temporal(settings)
        from starter.commands.serve import api_running

        async with (
            worker_running(settings, reuse=client, quiet=args.json) as worker,
            api_running(settings) as api,
        ):
            if args.json:
                print_json(ready_record(settings, stack, worker))
            if not interactive:
                say("[dim]no terminal to ask at (or --yes): approvals are given for you[/]")
            say(f"[bold]prompt:[/] {args.prompt}")
            run_id, status = await start_and_follow(
                settings,
                args.prompt,
                AgentConfig(workspace=str(workspace)),
                session_id=None,
                run_id=None,
                as_json=args.json,
                auto_approve=not interactive,
                interactive=interactive,
            )
            say(f"[bold]Web UI:[/] {web_ui_link(settings, run_id)}", soft_wrap=True)
            if api.url and api.key:
                # The key rides in the fragment, which the browser never sends to a server.
                say(f"[bold]Web page:[/] {api.url}/#key={api.key}", soft_wrap=True)
            else:
                say(f"[dim]web page not served here: {api.problem}[/]")
            # At a terminal, keep the stack up so the Web UI link opens the run; in a
            # script, stop.
            keep = args.keep_running or (sys.stdin.isatty() and not args.json and not args.exit)
            if keep and (stack.temporal or stack.postgres):
                stop = stop_requested()
                say("The stack keeps running so you can open the link; Ctrl-C stops it.")
                await until_stopped(stop)
                say("stopping the stack...")
        return exit_for(status)


def _quiet(*_: object, **__: object) -> None:
    """What demo --json prints instead of its human lines: nothing (stdout is JSON lines)."""
