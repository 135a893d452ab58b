"""`agentrun follow RUN` of a queued message's run (README "Sessions and double-texting"): the
run does not exist before its message leaves the session's queue, so follow says it is queued,
waits for it to start (however long: Ctrl-C stops waiting), then follows it as any run. A
message withdrawn (or whose run could not start) ends the wait with exit 1 and why."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentrun.client import RunHandle, queued_messages
from agentrun.client.queue import MessageNotStarted, queued_message_of, wait_started
from agentrun.protocol.queue import QueuedState
from starter.exits import EXIT_FAILED, CliError
from starter.output import err_console

if TYPE_CHECKING:
    from temporalio.client import Client

    from agentrun.store import Repository

# Once its message started, how long the run may take to be opened by a worker.
OPEN_TIMEOUT_S = 60.0


async def wait_if_queued(repo: Repository, client: Client, run_id: str) -> bool:
    """False when `run_id` is no queued message's run; else wait until the run is opened
    (True), or raise CliError when it never will be."""
    row = await queued_message_of(repo, run_id)
    if row is None:
        return False
    if row.state == QueuedState.QUEUED:
        waiting = await queued_messages(repo, row.session_id)
        ahead = [r for r in waiting if r.position < row.position]
        err_console.print(
            f"run {run_id} is queued (message {row.id} in session {row.session_id}, "
            f"{len(ahead)} queued message(s) ahead of it and the active run); waiting for it "
            "to start",
            soft_wrap=True,
            markup=False,
        )
    try:
        await wait_started(repo, row.id)
        await RunHandle(client, run_id, store=repo).opened(OPEN_TIMEOUT_S)
    except MessageNotStarted as exc:
        raise CliError(f"{exc}; its run never started", EXIT_FAILED) from None
    return True
