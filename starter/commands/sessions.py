"""`agentrun sessions delete ID`: forget a session (agentrun.client.forget): its text is erased
from every table, its usage figures stay, each of its runs' logs ends with a session.deleted
tombstone, and Temporal's histories of its runs are deleted."""

from __future__ import annotations

import argparse
import sys

from agentrun.client import SessionNotFound
from agentrun.client.forget import SessionActive, delete_session
from agentrun.contracts.run import ID_PATTERN
from starter.connect import database, settings_or_exit, temporal
from starter.exits import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, CliError
from starter.output import console, print_json


def _confirmed(args: argparse.Namespace) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise CliError(
            "deleting a session cannot be undone: pass --yes to confirm (stdin is not a "
            "terminal to ask on)",
            EXIT_USAGE,
        )
    answer = input(f"Delete session {args.session_id!r} and erase its conversation? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


async def cmd_sessions_delete(args: argparse.Namespace) -> int:
    import re

    if not re.match(ID_PATTERN, args.session_id):
        raise CliError(f"{args.session_id!r} is not a session id", EXIT_USAGE)
    settings = settings_or_exit()
    if not _confirmed(args):
        console.print("not deleted")
        return EXIT_FAILED
    client = await temporal(settings)
    async with database(settings) as repo:
        try:
            done = await delete_session(
                client, repo, args.session_id, cancel_active=args.cancel_active, by="cli"
            )
        except SessionNotFound:
            raise CliError(f"no session {args.session_id!r}", EXIT_NOT_FOUND) from None
        except SessionActive as exc:
            raise CliError(str(exc), EXIT_FAILED) from None
    if args.json:
        print_json(
            {
                "session_id": done.session_id,
                "deleted_at": done.deleted_at.isoformat(),
                "runs": done.run_ids,
                "cancelled": done.cancelled,
                "messages_erased": done.messages_erased,
                "histories_deleted": done.histories_deleted,
                "history_errors": done.history_errors,
            }
        )
        return EXIT_OK
    console.print(
        f"deleted session {done.session_id}: {done.messages_erased} messages erased, "
        f"{len(done.run_ids)} runs kept as tombstones (usage stays), "
        f"{done.histories_deleted} Temporal histories deleted"
        + (f", cancelled {', '.join(done.cancelled)}" if done.cancelled else ""),
        soft_wrap=True,
        markup=False,
    )
    for problem in done.history_errors:
        console.print(f"warning: history not deleted: {problem}", soft_wrap=True, markup=False)
    return EXIT_OK
