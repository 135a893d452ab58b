"""Double-texting words: what a new message does when its session has an active run, the
states of a queued message, and the states a conversation message can be in. Their values are
stored and sent: add, never rename."""

from __future__ import annotations

import enum


class IfBusy(enum.StrEnum):
    """A message's policy when its session already has an active run."""

    REJECT = "reject"  # refused (409 over HTTP) with the active run's id
    ENQUEUE = "enqueue"  # recorded now; its run starts when the runs before it ended
    INTERRUPT = "interrupt"  # the active run is cancelled, its partial answer kept
    ROLLBACK = "rollback"  # the active run is cancelled and its messages left out


class QueuedState(enum.StrEnum):
    QUEUED = "queued"  # waiting for the session to be free
    STARTED = "started"  # its run was started (the run's own record says the rest)
    CANCELLED = "cancelled"  # withdrawn before its run started
    FAILED = "failed"  # its run could not be started (`reason`)


class MessageState(enum.StrEnum):
    """messages.state; NULL is an ordinary message."""

    INTERRUPTED = "interrupted"  # the partial answer of a run cancelled while it streamed
    ROLLED_BACK = "rolled_back"  # a message of a rolled-back run: kept, never sent to a model
