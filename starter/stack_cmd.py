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
from pathlib import Path
from typing import Any

from temporalio.client import Client

from agentrun.contracts import AgentConfig
from agentrun.devstack import DevStack
from agentrun.settings import Settings
from starter.commands.start import start_and_follow
from starter.connect import settings_or_exit, temporal
from starter.exits import EXIT_OK, EXIT_USAGE, CliError
from starter.output import console, exit_for, web_ui_link


@contextlib.asynccontextmanager
async def embedded_stack(
    settings: Settings, *, starting: str, note: str, stopping: str | None = None
) -> AsyncIterator[DevStack]:
    """The stack up (each note printed with `note`, a format of one field) until the block
    ends; then what this process started is stopped."""
    stack = DevStack(settings)
    try:
        with console.status(starting):
            await stack.up()
        for line in stack.notes:
            console.print(note.format(line))
        yield stack
    finally:
        if stopping:
            with console.status(stopping):
                await asyncio.to_thread(stack.down)
            console.print("stopped.")
        else:
            await asyncio.to_thread(stack.down)


@contextlib.asynccontextmanager
async def worker_running(
    settings: Settings, *, reuse: Client | None = None
) -> AsyncIterator[asyncio.Task[None] | None]:
    """A worker in this process, ready when the block starts and stopped when it ends. With
    `reuse`, a worker already polling the task queue is used instead (the task is None)."""
    from worker import run_worker

    stop, ready = asyncio.Event(), asyncio.Event()
    task: asyncio.Task[None] | None = None
    if reuse is not None and await _worker_polling(reuse, settings.task_queue):
        console.print(f"[dim]• a worker is already polling {settings.task_queue!r}[/]")
    else:
        task = asyncio.create_task(run_worker(settings, stop, migrate=False, ready=ready))
        await asyncio.wait(
            [task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        if task.done():
            task.result()
    try:
        yield task
    finally:
        stop.set()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)


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
    stop = stop_requested()
    async with embedded_stack(
        settings,
        starting="starting the agentrun stack...",
        note="  [green]•[/] {}",
        stopping="stopping...",
    ) as stack:
        if stack.postgres is None and stack.temporal is None:
            console.print("[bold]A stack is already running; reusing it.[/]")
        console.print(
            f"[bold green]agentrun stack ready[/] in {stack.started_in_s:.1f}s\n"
            f"  Temporal   {settings.temporal_address} (namespace {settings.temporal_namespace})\n"
            f"  Web UI     {stack.ui_url}\n"
            f"  PostgreSQL {settings.database_url_display}\n"
            f"  Model      {_model_line(settings)}"
        )
        if args.no_worker:
            console.print("Press Ctrl-C to stop.")
            await until_stopped(stop)
            return EXIT_OK
        async with worker_running(settings) as worker:
            console.print(
                f"  Worker     polling task queue {settings.task_queue!r}; Ctrl-C stops all"
            )
            await until_stopped(stop, worker)
    return EXIT_OK


def _model_line(settings: Settings) -> str:
    if settings.uses_offline_model:
        return "offline scripted model (set OPENAI_BASE_URL for a real one)"
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
    interactive = sys.stdin.isatty() and not args.yes
    if not interactive and not args.yes and not settings.uses_offline_model:
        # Approvals are only given for the user against the offline model, whose tool calls
        # are scripted; a real model's calls need a person or an explicit --yes.
        raise CliError(
            f"no terminal to ask for approvals at, and a real model ({settings.model} at "
            f"{settings.openai_base_url}) is configured: run the demo at a terminal, or pass "
            "--yes to approve every call it makes",
            EXIT_USAGE,
        )
    async with embedded_stack(
        settings,
        starting="bringing up the embedded stack (Temporal + PostgreSQL)...",
        note="[dim]• {}[/]",
    ) as stack:
        if settings.uses_offline_model:
            console.print(
                "[yellow]No model configured: using agentrun's offline scripted model. Set "
                "OPENAI_BASE_URL, OPENAI_API_KEY and AGENTRUN_MODEL for a real one.[/]"
            )
        workspace = _demo_workspace(settings)
        client = await temporal(settings)
        async with worker_running(settings, reuse=client):
            if not interactive:
                console.print(
                    "[dim]no terminal to ask at (or --yes): approvals are given for you[/]"
                )
            console.print(f"[bold]prompt:[/] {args.prompt}")
            run_id, status = await start_and_follow(
                settings,
                args.prompt,
                AgentConfig(workspace=str(workspace)),
                session_id=None,
                run_id=None,
                as_json=False,
                auto_approve=not interactive,
                interactive=interactive,
            )
            console.print(f"[bold]Web UI:[/] {web_ui_link(settings, run_id)}", soft_wrap=True)
            # At a terminal, keep the stack up so the Web UI link opens the run; in a
            # script, stop.
            keep = args.keep_running or (sys.stdin.isatty() and not args.exit)
            if keep and (stack.temporal or stack.postgres):
                stop = stop_requested()
                console.print("The stack keeps running so you can open the link; Ctrl-C stops it.")
                await until_stopped(stop)
                console.print("stopping the stack...")
        return exit_for(status)
