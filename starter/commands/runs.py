"""run, follow, status, transcript and ls."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from agentrun.client import RunEnded, RunNotFound, describe_run, list_runs, run_status
from agentrun.contracts import AgentConfig, strict_validate
from agentrun.protocol.statuses import RunStatus
from starter.connect import database, run_gone, settings_or_exit, temporal
from starter.exits import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, CliError
from starter.follower import Follower, print_end, start_and_follow, usage
from starter.output import (
    cause_text,
    console,
    exit_for,
    first_error,
    print_json,
    web_ui_link,
)


def interactive(args: argparse.Namespace) -> bool:
    return sys.stdin.isatty() and not args.no_input and not args.json


def config_from(args: argparse.Namespace) -> AgentConfig:
    fields: dict[str, Any] = {}
    if getattr(args, "config", None):
        try:
            fields = json.loads(args.config)
        except ValueError as exc:
            raise CliError(f"--config is not JSON: {exc}", EXIT_USAGE) from None
        if not isinstance(fields, dict):
            raise CliError("--config must be a JSON object of AgentConfig fields", EXIT_USAGE)
    if args.model is not None:
        fields["model"] = args.model
    if args.tools is not None:
        fields["tools"] = [t for t in args.tools.split(",") if t]
    if args.workspace:
        fields["workspace"] = str(Path(args.workspace).resolve())
    if args.approval:
        fields["approval"] = args.approval
    try:
        return strict_validate(AgentConfig, fields)
    except ValueError as exc:
        raise CliError(f"bad option: {first_error(exc, 'config')}", EXIT_USAGE) from None


async def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    _, status = await start_and_follow(
        settings,
        args.prompt,
        config_from(args),
        session_id=args.session,
        run_id=args.run_id,
        as_json=args.json,
        auto_approve=args.yes,
        interactive=interactive(args),
    )
    return exit_for(status)


async def cmd_follow(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    if args.from_seq < 0:
        raise CliError("--from takes a sequence number of 0 or more", EXIT_USAGE)
    async with database(settings) as repo:
        if await repo.find_run(args.run_id) is None:
            raise CliError(
                f"no run {args.run_id!r} in the database; list runs with `agentrun ls`",
                EXIT_NOT_FOUND,
            )
        client = None
        if args.yes or interactive(args):
            client = await temporal(settings)
        follower = Follower(
            repo,
            client,
            args.run_id,
            as_json=args.json,
            auto_approve=args.yes,
            interactive=interactive(args),
        )
        status = await follower.follow(args.from_seq)
        totals = await usage(repo, args.run_id, None)
        print_end(args.run_id, status, totals, args.json, follower.detached)
        return exit_for(status)


async def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    client = await temporal(settings)
    async with database(settings) as repo:
        run = await repo.find_run(args.run_id)
        if run is None:
            try:
                desc = await describe_run(client, args.run_id)
            except RunNotFound as exc:
                raise run_gone(exc) from None
            raise run_gone(RunEnded(args.run_id, desc.status.name if desc.status else None))
        view: dict[str, Any] = {
            "run_id": run.id,
            "session_id": run.session_id,
            "status": run.status,
            "model": run.model,
            "turns": run.turns,
            "error": run.error,
            "created_at": run.created_at,
            "finished_at": run.finished_at,
            "usage": await usage(repo, run.id, None),
            "pending": [],
            "web_ui": web_ui_link(settings, run.id),
        }
        if not RunStatus(run.status).terminal:
            try:
                live = await asyncio.wait_for(run_status(client, run.id), 10)
                view["phase"] = live.phase
                view["pending"] = [p.model_dump() for p in live.pending]
            except Exception as exc:
                view["phase"] = f"unknown (query failed: {cause_text(exc)}; is a worker running?)"
    if args.json:
        print_json(view)
        return EXIT_OK
    _print_status(view)
    return EXIT_OK


def _print_status(view: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for key in ("run_id", "session_id", "status", "phase", "model", "turns", "error", "web_ui"):
        if view.get(key) is not None:
            table.add_row(key, str(view[key]))
    u = view["usage"]
    table.add_row(
        "usage",
        f"{u['prompt_tokens']}+{u['completion_tokens']} tokens, {u['llm_calls']} model calls, "
        f"{u['tool_calls']} tool calls",
    )
    for p in view["pending"]:
        table.add_row("pending", f"{p['kind']} {p['tool_call_id']} {p['name']} {p['arguments']}")
    console.print(table)


async def cmd_transcript(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    if bool(args.run_id) == bool(args.session):
        raise CliError("give a RUN_ID or --session ID (one of them)", EXIT_USAGE)
    async with database(settings) as repo:
        if args.run_id:
            if await repo.find_run(args.run_id) is None:
                raise CliError(f"no run {args.run_id!r}", EXIT_NOT_FOUND)
            messages = await repo.run_messages(args.run_id)
        else:
            messages = await repo.session_messages(args.session)
            if not messages:
                raise CliError(f"no messages in session {args.session!r}", EXIT_NOT_FOUND)
    for m in messages:
        if args.json:
            print_json(
                {
                    "run_id": m.run_id,
                    "turn": m.turn,
                    "role": m.role,
                    "content": m.content,
                    "tool_calls": m.tool_calls,
                    "tool_call_id": m.tool_call_id,
                    "created_at": m.created_at,
                }
            )
            continue
        style = {"user": "bold", "assistant": "green", "tool": "cyan"}.get(m.role, "")
        label = m.role if m.role != "tool" else f"tool {m.name} ({m.tool_call_id})"
        console.print(f"[{style}]{label}:[/] ", end="")
        console.print(m.content or "", markup=False)
        for c in m.tool_calls or []:
            console.print(f"  [cyan]→ {c['function']['name']}[/] {c['function']['arguments']}")
    return EXIT_OK


async def cmd_ls(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    status = None
    if args.status:
        status = args.status.upper()
        if status not in RunStatus.__members__:
            raise CliError(
                f"--status must be one of {', '.join(RunStatus.__members__)}", EXIT_USAGE
            )
    client = await temporal(settings)
    rows = await list_runs(
        client,
        status=status,
        session_id=args.session,
        waiting_approval=args.waiting,
        limit=args.limit,
    )
    if args.json:
        for row in rows:
            print_json(row.model_dump())
        return EXIT_OK
    table = Table("run", "status", "session", "model", "started")
    for row in rows:
        table.add_row(
            row.run_id,
            str(row.status) + (" ⏸" if row.waiting_approval else ""),
            str(row.session_id),
            str(row.model),
            row.started.strftime("%Y-%m-%d %H:%M:%S") if row.started else "",
        )
    console.print(table)
    return EXIT_OK
