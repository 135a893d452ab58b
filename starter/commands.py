"""`agentrun run` and `agentrun demo`: start a run and follow it live from the event log."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from agentrun.contracts import AgentConfig
from agentrun.db.models import RunStatus
from agentrun.db.repository import Repository, SessionBusyError
from agentrun.settings import Settings, SettingsError, load_settings

console = Console(highlight=False)

DEMO_PROMPT = "List the files in the workspace, then work out 17 * 23 with the calculator."


def web_ui_link(settings: Settings, run_id: str) -> str:
    host, _ = settings.temporal_host_port
    return (
        f"http://{host}:{settings.temporal_ui_port}/namespaces/{settings.temporal_namespace}"
        f"/workflows/{run_id}"
    )


async def follow_and_print(repo: Repository, run_id: str, as_json: bool) -> str:
    """Print the run's events as they commit; returns the final status."""
    from starter.cli import print_json

    text_open = False
    async for event in repo.follow_events(run_id, 0):
        data: dict[str, Any] = event.data
        if as_json:
            print_json({"seq": event.seq, "type": event.type, "data": data})
            continue
        if event.type == "message.delta":
            console.print(data["text"], end="", markup=False)
            text_open = True
            continue
        if text_open:
            console.print()
            text_open = False
        if event.type == "stream.reset":
            console.print(
                f"[yellow]↺ model attempt {data['attempt']} (retrying turn {data['turn']})[/]"
            )
        elif event.type == "tool.call":
            console.print(f"[cyan]→ {data['name']}[/] {data['arguments']}", markup=True)
        elif event.type == "tool.result":
            mark = "[red]✗[/]" if data.get("is_error") else "[green]✓[/]"
            first = str(data.get("result", "")).splitlines()[:6]
            console.print(f"{mark} {data['name']}: " + "\n    ".join(first), markup=True)
        elif event.type == "error":
            console.print(f"[yellow]! {data.get('message')}[/]")
        elif event.type == "run.status" and data["status"] in ("DONE", "FAILED", "CANCELED"):
            style = "green" if data["status"] == "DONE" else "red"
            extra = f": {data['error']}" if data.get("error") else ""
            console.print(f"[bold {style}]{data['status']}[/]{extra}")
    run = await repo.get_run(run_id)
    return run.status


async def run_prompt(
    settings: Settings,
    prompt: str,
    *,
    session_id: str | None,
    run_id: str | None,
    config: AgentConfig,
    as_json: bool,
) -> tuple[str, str]:
    from starter.api import start_run
    from starter.cli import CliError, print_json
    from worker import connect_client

    try:
        client = await asyncio.wait_for(connect_client(settings), 10)
    except Exception:
        raise CliError(
            f"cannot reach Temporal at {settings.temporal_address}; start it with `agentrun dev` "
            "or set TEMPORAL_ADDRESS",
            3,
        ) from None
    repo = Repository.connect(settings.sqlalchemy_url, pool_size=2)
    started = time.monotonic()
    try:
        try:
            handle = await start_run(
                client,
                settings.task_queue,
                prompt,
                session_id=session_id,
                run_id=run_id,
                config=config,
                repo=repo,
            )
        except SessionBusyError as exc:
            raise CliError(str(exc)) from None
        except ValueError as exc:
            raise CliError(str(exc), 2) from None
        if not as_json:
            console.print(f"[dim]run {handle.id} · {web_ui_link(settings, handle.id)}[/]")
        # The run row appears when the worker picks the run up; wait for it, bounded.
        deadline = time.monotonic() + 60
        while await repo.find_run(handle.id) is None:
            if time.monotonic() > deadline:
                raise CliError("the run did not start within 60 s: is a worker running?")
            desc = await handle.describe()
            if desc.status is not None and desc.status.name != "RUNNING":
                try:
                    await handle.result()
                except Exception as exc:
                    raise CliError(f"run refused: {_cause(exc)}") from None
            await asyncio.sleep(0.2)
        status = await follow_and_print(repo, handle.id, as_json)
        run = await repo.get_run(handle.id)
        usage = {
            "prompt_tokens": run.prompt_tokens,
            "completion_tokens": run.completion_tokens,
            "llm_calls": run.llm_call_count,
            "tool_calls": run.tool_call_count,
            "turns": run.turns,
            "seconds": round(time.monotonic() - started, 2),
        }
        if as_json:
            print_json({"run_id": handle.id, "status": status, "usage": usage})
        else:
            console.print(
                f"[dim]{usage['prompt_tokens']}+{usage['completion_tokens']} tokens · "
                f"{usage['llm_calls']} model calls · {usage['tool_calls']} tool calls · "
                f"{usage['seconds']}s[/]"
            )
        return handle.id, status
    finally:
        await repo.close()


def _cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return getattr(exc, "message", None) or str(exc)


def _config(args: argparse.Namespace) -> AgentConfig:
    from starter.cli import CliError

    try:
        return AgentConfig(
            model=args.model,
            tools=[t for t in args.tools.split(",") if t] if args.tools is not None else None,
            workspace=str(Path(args.workspace).resolve()) if args.workspace else None,
        )
    except ValueError as exc:
        raise CliError(str(exc), 2) from None


async def _run(args: argparse.Namespace) -> int:
    from starter.cli import CliError

    try:
        settings = load_settings()
    except SettingsError as exc:
        raise CliError(str(exc), 2) from None
    _, status = await run_prompt(
        settings,
        args.prompt,
        session_id=args.session,
        run_id=args.run_id,
        config=_config(args),
        as_json=args.json,
    )
    return 0 if status == RunStatus.DONE else 1


async def _demo(args: argparse.Namespace) -> int:
    from agentrun.devstack import DevStack
    from starter.cli import CliError
    from worker import run_worker

    try:
        settings = load_settings()
    except SettingsError as exc:
        raise CliError(str(exc), 2) from None
    stack = DevStack(settings)
    with console.status("bringing up the embedded stack (Temporal + PostgreSQL)..."):
        await stack.up()
    for note in stack.notes:
        console.print(f"[dim]• {note}[/]")
    if settings.uses_offline_model:
        console.print(
            "[yellow]No model configured: using agentrun's offline scripted model. Set "
            "OPENAI_BASE_URL, OPENAI_API_KEY and AGENTRUN_MODEL for a real one.[/]"
        )
    workspace = Path(settings.data_dir).resolve() / "demo-workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "notes.txt").write_text("agentrun demo workspace\n")
    (workspace / "plan.md").write_text("# Plan\n1. list files\n2. multiply\n")
    stop, ready = asyncio.Event(), asyncio.Event()
    worker_task = asyncio.create_task(run_worker(settings, stop, migrate=False, ready=ready))
    try:
        await asyncio.wait(
            [worker_task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        if worker_task.done():
            worker_task.result()
        console.print(f"[bold]prompt:[/] {args.prompt}")
        run_id, status = await run_prompt(
            settings,
            args.prompt,
            session_id=None,
            run_id=None,
            config=AgentConfig(workspace=str(workspace)),
            as_json=False,
        )
        console.print(f"[bold]Web UI:[/] {web_ui_link(settings, run_id)}")
        # At a terminal, keep the stack up so the Web UI link opens the run; in a script, stop.
        keep = args.keep_running or (sys.stdin.isatty() and not args.exit)
        if keep and (stack.temporal or stack.postgres):
            console.print("The stack keeps running so you can open the link; Ctrl-C stops it.")
            await asyncio.Event().wait()
        return 0 if status == RunStatus.DONE else 1
    finally:
        stop.set()
        await asyncio.gather(worker_task, return_exceptions=True)
        await asyncio.to_thread(stack.down)


def register(sub: Any) -> None:
    run = sub.add_parser("run", help="start a run and follow it live")
    run.add_argument("prompt")
    run.add_argument("--session", help="session id; runs in one session share a conversation")
    run.add_argument("--run-id", help="run id; starting the same id again returns that run")
    run.add_argument("--model", help="model name (default AGENTRUN_MODEL)")
    run.add_argument("--tools", help="comma-separated tool names; empty for none")
    run.add_argument("--workspace", help="folder for the file and shell tools")
    run.add_argument("--json", action="store_true", help="one JSON object per event")
    run.set_defaults(handler=_run, is_async=True)

    demo = sub.add_parser(
        "demo", help="bring up the embedded stack and run an example agent task end to end"
    )
    demo.add_argument("--prompt", default=DEMO_PROMPT)
    demo.add_argument("--keep-running", action="store_true", help="keep the stack up after the run")
    demo.set_defaults(handler=_demo, is_async=True)
