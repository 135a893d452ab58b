"""`agentrun queue list|cancel|policy`, and what `agentrun run --if-busy` shows while its
message waits for the runs before it."""

from __future__ import annotations

import argparse
from typing import Any

from agentrun.client import (
    MessageNotStarted,
    MessageRefused,
    SessionNotFound,
    cancel_message,
    queued_messages,
    set_session_policy,
    wait_started,
)
from agentrun.client.queue import session_policy
from agentrun.contracts.queue import Accepted
from agentrun.db.models import QueuedMessage
from agentrun.protocol.queue import QueuedState
from agentrun.store import NotFoundError, Repository
from starter.connect import database, settings_or_exit
from starter.exits import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, CliError
from starter.output import console, err_console, print_json


async def wait_in_queue(repo: Repository, accepted: Accepted | None, as_json: bool) -> None:
    """A message that waits behind other runs: say so, and wait until its run starts (Ctrl-C
    leaves it queued). One that is cancelled meanwhile ends the command."""
    if accepted is None or accepted.state != QueuedState.QUEUED or not accepted.ahead:
        return
    if not as_json:
        behind = f" behind run {accepted.active_run_id}" if accepted.active_run_id else ""
        doing = {"interrupt": "interrupting", "rollback": "rolling back"}.get(accepted.policy)
        if doing and accepted.active_run_id:
            behind = f"; {doing} run {accepted.active_run_id}"
        err_console.print(
            f"message {accepted.message_id} queued ({accepted.ahead} ahead{behind}); its run "
            f"starts when they end. Ctrl-C leaves it queued; withdraw it with `agentrun queue "
            f"cancel {accepted.message_id}`",
            soft_wrap=True,
            markup=False,
        )
    try:
        await wait_started(repo, accepted.message_id)
    except MessageNotStarted as exc:
        raise CliError(str(exc)) from None


def _row(row: QueuedMessage) -> dict[str, Any]:
    return {
        "message_id": row.id,
        "run_id": row.run_id,
        "session_id": row.session_id,
        "position": row.position,
        "if_busy": row.policy,
        "state": row.state,
        "preempt": row.preempt,
        "supersedes_run_id": row.supersedes_run_id,
        "reason": row.reason,
        "created_at": row.created_at,
    }


async def cmd_queue(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    async with database(settings) as repo:
        if args.queue_command == "list":
            rows = await queued_messages(repo, args.session, all_states=args.all)
            _print_rows([_row(r) for r in rows], args.json)
            return EXIT_OK
        if args.queue_command == "cancel":
            return await _cancel(repo, args)
        return await _policy(repo, args)


async def _cancel(repo: Repository, args: argparse.Namespace) -> int:
    try:
        row = await cancel_message(repo, args.message_id, by="cli")
    except NotFoundError:
        raise CliError(f"no queued message {args.message_id!r}", EXIT_NOT_FOUND) from None
    except MessageRefused as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print_json(_row(row))
    else:
        console.print(f"message {row.id} cancelled; run {row.run_id} will not start", markup=False)
    return EXIT_OK


async def _policy(repo: Repository, args: argparse.Namespace) -> int:
    if args.policy is None:
        current = await session_policy(repo, args.session)
    else:
        wanted = None if args.policy == "none" else args.policy
        try:
            current = await set_session_policy(repo, args.session, wanted)
        except SessionNotFound as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
    if args.json:
        print_json({"session_id": args.session, "if_busy": current})
    else:
        shown = current.value if current else "reject (none set)"
        console.print(f"session {args.session}: --if-busy {shown}", markup=False, soft_wrap=True)
    return EXIT_OK


def _print_rows(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for row in rows:
            print_json(row)
        return
    if not rows:
        console.print("no messages", markup=False)
    for r in rows:
        extra = f" (replaces {r['supersedes_run_id']})" if r["supersedes_run_id"] else ""
        console.print(
            f"{r['message_id']}  #{r['position']}  {r['state']}  {r['if_busy']}{extra}  "
            f"run {r['run_id']}",
            soft_wrap=True,
            markup=False,
        )
