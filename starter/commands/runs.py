"""run, follow, status, transcript and ls."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from agentrun.client import (
    RunEnded,
    RunNotFound,
    RunSummary,
    describe_run,
    list_runs,
    run_status,
)
from agentrun.client.queue import queued_message_of
from agentrun.contracts import AgentConfig, strict_validate
from agentrun.db.models import Message
from agentrun.protocol.statuses import RunStatus
from agentrun.store import NotFoundError, Repository
from starter.commands.start import prompt_from, start_and_follow
from starter.connect import database, run_gone, settings_or_exit, temporal
from starter.exits import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, CliError
from starter.follower import Follower, print_end, usage
from starter.output import (
    cause_text,
    console,
    err_console,
    exit_for,
    first_error,
    print_json,
    web_ui_link,
)
from starter.queued_follow import wait_if_queued


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
    prompt = prompt_from(args)
    settings = settings_or_exit()
    _, status = await start_and_follow(
        settings,
        prompt,
        config_from(args),
        session_id=args.session,
        run_id=args.run_id,
        as_json=args.json,
        auto_approve=args.yes,
        interactive=interactive(args),
        if_busy=args.if_busy,
    )
    return exit_for(status)


async def cmd_follow(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    if args.from_seq < 0:
        raise CliError("--from takes a sequence number of 0 or more", EXIT_USAGE)
    async with database(settings) as repo:
        run = await repo.find_run(args.run_id)
        if run is None and await queued_message_of(repo, args.run_id) is not None:
            # A queued message's run: wait for it to start.
            await wait_if_queued(repo, await temporal(settings), args.run_id)
            run = await repo.find_run(args.run_id)
        if run is None:
            raise CliError(
                f"no run {args.run_id!r} in the database; list runs with `agentrun ls`",
                EXIT_NOT_FOUND,
            )
        _check_cursor(args, run.status, run.last_event_seq)
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


def _check_cursor(args: argparse.Namespace, status: str, last_seq: int) -> None:
    """--from past the run's last event: an error for a run that ended (nothing will come),
    a note for a live one (it waits for what comes next)."""
    if args.from_seq <= last_seq:
        return
    if RunStatus(status).terminal:
        raise CliError(
            f"--from {args.from_seq} is past the last event of run {args.run_id!r}, which "
            f"ended {status} with its last event at seq {last_seq}; give --from {last_seq} or less",
            EXIT_USAGE,
        )
    err_console.print(
        f"run {args.run_id} is at seq {last_seq}; waiting for events with seq > {args.from_seq}",
        soft_wrap=True,
        markup=False,
    )


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
            "waiting_on": [],
            "parent_run_id": run.parent_run_id,
            "web_ui": web_ui_link(settings, run.id),
        }
        if not RunStatus(run.status).terminal:
            try:
                live = await asyncio.wait_for(run_status(client, run.id), 10)
                view["phase"] = live.phase
                view["pending"] = [p.model_dump() for p in live.pending]
                view["waiting_on"] = [w.model_dump() for w in live.waiting_on]
            except Exception as exc:
                view["phase"] = f"unknown (query failed: {cause_text(exc)}; is a worker running?)"
    if args.json:
        print_json(view)
        return EXIT_OK
    _print_status(view)
    return EXIT_OK


def _print_status(view: dict[str, Any]) -> None:
    # One line per field, printed whole: ids and links are never cut at the terminal's width.
    lines = [
        (key, str(view[key]))
        for key in (
            "run_id",
            "parent_run_id",
            "session_id",
            "status",
            "phase",
            "model",
            "turns",
            "error",
        )
        if view.get(key) is not None
    ]
    u = view["usage"]
    lines.append(
        (
            "usage",
            f"{u['prompt_tokens']}+{u['completion_tokens']} tokens, {u['llm_calls']} model "
            f"calls, {u['tool_calls']} tool calls"
            + (f", ${u['cost_usd']}" if u.get("cost_usd") is not None else "")
            + (f", {u['unpriced_calls']} unpriced calls" if u.get("unpriced_calls") else ""),
        )
    )
    for p in view["pending"]:
        lines.append(("pending", f"{p['kind']} {p['tool_call_id']} {p['name']} {p['arguments']}"))
    for w in view["waiting_on"]:  # a sub-run's calls: decide them on that run
        for c in w["calls"]:
            lines.append(("waiting on", f"sub-run {w['run_id']}: {c['tool_call_id']} {c['name']}"))
    lines.append(("web_ui", view["web_ui"]))
    for key, value in lines:
        console.print(f"{key:<11}{value}", soft_wrap=True, markup=False)


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
        edits = await _edits(repo, messages)
    for m in messages:
        if args.json:
            print_json(_message_json(m, edits))
        else:
            _print_message(m, edits)
    return EXIT_OK


Edits = dict[tuple[str, str], tuple[str, str | None]]


async def _edits(repo: Repository, messages: list[Message]) -> Edits:
    """(run id, tool call id) -> (the arguments that ran, who edited them), for the calls a
    person approved with edited arguments."""
    edits: Edits = {}
    for m in messages:
        for c in m.tool_calls or []:
            try:
                row = await repo.get_tool_call(m.run_id, c["id"])
            except NotFoundError:
                continue
            if row.decided_arguments is not None:
                edits[(m.run_id, c["id"])] = (row.decided_arguments, row.decided_by)
    return edits


def _message_json(m: Message, edits: Edits) -> dict[str, Any]:
    calls = []
    for c in m.tool_calls or []:
        edit = edits.get((m.run_id, c["id"]))
        if edit is not None:
            c = {**c, "edited": {"arguments": edit[0], "by": edit[1]}}
        calls.append(c)
    return {
        "run_id": m.run_id,
        "turn": m.turn,
        "role": m.role,
        "content": m.content,
        "tool_calls": calls or m.tool_calls,
        "tool_call_id": m.tool_call_id,
        "created_at": m.created_at,
        "state": m.state,
    }


def _print_message(m: Message, edits: Edits) -> None:
    style = {"user": "bold", "assistant": "green", "tool": "cyan"}.get(m.role, "")
    label = m.role if m.role != "tool" else f"tool {m.name} ({m.tool_call_id})"
    if m.state:  # interrupted, rolled_back (double-texting)
        label += f" [{m.state}]"
    console.print(f"[{style}]{label}:[/] ", end="")
    console.print(m.content or "", markup=False)
    for c in m.tool_calls or []:
        fn = c["function"]
        console.print(f"  [cyan]→ {fn['name']}[/] ", end="")
        console.print(fn["arguments"], markup=False)
        edit = edits.get((m.run_id, c["id"]))
        if edit is not None:
            console.print(f"    [yellow]edited by {edit[1] or 'someone'}:[/] ", end="")
            console.print(edit[0], markup=False)


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
    _print_runs(rows)
    return EXIT_OK


def _print_runs(rows: list[RunSummary]) -> None:
    """A table when the ids fit whole beside the other columns, else two lines a run: ids are
    never cut (the other columns shrink or move)."""
    cells = [
        (
            row.run_id,
            str(row.status) + (" ⏸" if row.waiting_approval else ""),
            str(row.session_id),
            str(row.model),
            row.started.strftime("%Y-%m-%d %H:%M:%S") if row.started else "",
        )
        for row in rows
    ]
    run_w, status_w, session_w = (max((len(c[i]) for c in cells), default=7) for i in (0, 1, 2))
    # Borders and padding of five columns (16); the model and the time fold to 5 and 10.
    if run_w + status_w + session_w + 5 + 10 + 16 > console.width:
        for run_id, status, session, model, started in cells:
            console.print(f"{run_id}  {status}  {started}", soft_wrap=True, markup=False)
            console.print(f"  session {session} · model {model}", soft_wrap=True, markup=False)
        return
    table = Table()
    table.add_column("run", no_wrap=True, min_width=run_w)
    table.add_column("status", no_wrap=True, min_width=status_w)
    table.add_column("session", no_wrap=True, min_width=session_w)
    table.add_column("model", overflow="fold", min_width=5)
    table.add_column("started", overflow="fold", min_width=10)
    for row_cells in cells:
        table.add_row(*row_cells)
    console.print(table)
