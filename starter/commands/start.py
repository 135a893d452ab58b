"""Starting a run from the CLI: the prompt (an argument, `-` for stdin, or --prompt-file), the
config checked as the worker checks it at open before anything starts, and the header that
names the run, its session, its workspace and its Web UI link; then following it to its end."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from agentrun.client import (
    MessageRefused,
    RunEnded,
    RunFailed,
    RunNotStarted,
    SessionBusy,
    new_id,
    start_run,
)
from agentrun.contracts import AgentConfig, ToolApproval
from agentrun.contracts.run import MAX_PROMPT_CHARS
from agentrun.contracts.subagents import strip_delegates
from agentrun.settings import Settings
from agentrun.store import Repository
from starter.commands.queue import wait_in_queue
from starter.connect import database, temporal
from starter.exits import EXIT_USAGE, CliError
from starter.follower import Follower, print_end, usage
from starter.model_note import warn_if_model_differs
from starter.output import console, first_error, print_json, web_ui_link

STDIN = "-"


def prompt_from(args: argparse.Namespace) -> str:
    """The prompt: the argument, stdin for `-`, or the file of --prompt-file (one of them)."""
    path: str | None = getattr(args, "prompt_file", None)
    if path is not None and args.prompt is not None:
        raise CliError("give the prompt as an argument or with --prompt-file, not both", EXIT_USAGE)
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise CliError(f"cannot read --prompt-file {path!r}: {reason}", EXIT_USAGE) from None
        where = f"--prompt-file {path!r}"
    elif args.prompt == STDIN:
        if sys.stdin.isatty():
            raise CliError("`-` reads the prompt from stdin: pipe or redirect it", EXIT_USAGE)
        try:
            text = sys.stdin.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read the prompt from stdin: {exc}", EXIT_USAGE) from None
        where = "stdin"
    elif args.prompt is None:
        raise CliError("give a prompt: PROMPT, `-` for stdin, or --prompt-file PATH", EXIT_USAGE)
    else:
        return str(args.prompt)
    if not text.strip():
        raise CliError(f"the prompt is empty (read from {where})", EXIT_USAGE)
    if len(text) > MAX_PROMPT_CHARS:
        raise CliError(
            f"the prompt from {where} has {len(text)} characters; the limit is {MAX_PROMPT_CHARS}",
            EXIT_USAGE,
        )
    return text


async def check_config(config: AgentConfig, repo: Repository, task_queue: str) -> None:
    """The worker's check at open, made before the start: tool names against the tools the
    workers of the task queue offer (the built-ins, and what workers published in the tool
    catalog), client tools, approval settings naming known tools. The worker's approval floor
    and workspace root are its own; it still refuses what breaks them."""
    from activities.policy import resolve_policy
    from activities.tools import default_registry

    registry = default_registry()
    known = set(registry.names) | await repo.known_tools(task_queue)
    unknown = [name for name in config.tools or [] if name not in known]
    if unknown:
        raise CliError(
            f"bad option: unknown tool(s) {', '.join(unknown)}; the workers of task queue "
            f"{task_queue!r} offer: {', '.join(sorted(known))}; nothing was started",
            EXIT_USAGE,
        )
    # A worker's own tools are known by name only here: check the rest against the built-ins.
    custom = known - set(registry.names)
    config = strip_delegates(config)  # sub-agents' tools are checked by the worker at open
    builtin_only = config.model_copy(
        update={
            "tools": None if config.tools is None else [n for n in config.tools if n not in custom],
            "approval_overrides": {
                k: v for k, v in config.approval_overrides.items() if k not in custom
            },
            "approval_allow": [n for n in config.approval_allow if n not in custom],
        }
    )
    # No floor here: only the worker knows its own, and it applies it at open.
    no_floor = {name: ToolApproval.AUTO.value for name in registry.names}
    try:
        resolve_policy(registry, builtin_only, no_floor)
    except ValueError as exc:
        raise CliError(f"bad option: {exc}; nothing was started", EXIT_USAGE) from None


def workspace_of(settings: Settings, config: AgentConfig, session_id: str) -> Path:
    """Where the run's file and shell tools work (by this machine's settings)."""
    from activities.policy import workspace_for

    try:
        return workspace_for(config.workspace, settings.tool_workspace_root, session_id)
    except ValueError:
        return Path(config.workspace or settings.tool_workspace_root)


async def start_and_follow(
    settings: Settings,
    prompt: str,
    config: AgentConfig,
    *,
    session_id: str | None,
    run_id: str | None,
    as_json: bool,
    auto_approve: bool,
    interactive: bool,
    if_busy: str | None = None,
) -> tuple[str, str]:
    """Start a run, follow it to its end (or a detach); its id and status then."""
    session_id = session_id or new_id("session")
    client = await temporal(settings)
    async with database(settings) as repo:
        await check_config(config, repo, settings.task_queue)
        started = time.monotonic()
        try:
            handle = await start_run(
                client,
                settings.task_queue,
                prompt,
                session_id=session_id,
                run_id=run_id,
                config=config,
                repo=repo,
                if_busy=if_busy,
            )
        except SessionBusy as exc:
            raise CliError(str(exc)) from None
        except (RunEnded, MessageRefused, ValueError) as exc:
            raise CliError(f"bad input: {first_error(exc)}", EXIT_USAGE) from None
        if not as_json:
            workspace = workspace_of(settings, config, session_id)
            _print_header(settings, handle.id, session_id, workspace)
        await wait_in_queue(repo, handle.accepted, as_json)
        try:
            await handle.opened(timeout=60)
        except RunFailed as exc:
            raise CliError(f"run refused: {exc}") from None
        except RunEnded as exc:
            raise CliError(f"the run ended before it opened: {exc}") from None
        except RunNotStarted:
            raise CliError(
                "the run did not start within 60 s: is a worker polling task queue "
                f"{settings.task_queue!r}? Start one with `agentrun dev` or `agentrun worker`"
            ) from None
        await warn_if_model_differs(settings, repo, handle.id)
        follower = Follower(
            repo,
            client,
            handle.id,
            as_json=as_json,
            auto_approve=auto_approve,
            interactive=interactive,
        )
        status = await follower.follow(0)
        totals = await usage(repo, handle.id, started)
        if as_json:
            summary = {"run_id": handle.id, "session_id": session_id, "status": status}
            if handle.accepted is not None:
                summary["message_id"] = handle.accepted.message_id
            print_json({**summary, "usage": totals, "detached": follower.detached})
        else:
            print_end(handle.id, status, totals, as_json, follower.detached)
        return handle.id, status


def _print_header(settings: Settings, run_id: str, session_id: str, workspace: Path) -> None:
    # Ids and links are printed whole (soft_wrap: never cut at the terminal's width).
    for line in (
        f"run {run_id} · {web_ui_link(settings, run_id)}",
        f"session {session_id} (continue it with --session {session_id})",
        f"workspace {workspace}",
    ):
        console.print(line, style="dim", soft_wrap=True, markup=False)
