"""What every command prints with: the consoles, JSON lines, one-line messages from errors, the
Web UI link of a run and the exit code a run's status gives."""

from __future__ import annotations

import json
import sys

from rich.console import Console

from agentrun.protocol.statuses import RunStatus
from agentrun.settings import Settings
from starter.exits import EXIT_FAILED, EXIT_OK

console = Console(highlight=False)
# soft_wrap: a warning or hint is one line however narrow the terminal (or COLUMNS) is.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def first_error(exc: Exception, within: str = "") -> str:
    """The first problem of a pydantic ValidationError as `where: what` (else str(exc))."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        e = errors()[0]
        where = ".".join(str(p) for p in (*([within] if within else []), *e["loc"]))
        if e["type"] == "extra_forbidden":
            return f"{where}: unknown field (this agentrun does not know it)"
        return f"{where}: {e['msg']}"
    return str(exc)


def cause_text(exc: BaseException) -> str:
    """The message of the innermost cause (an ApplicationError's, say)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return getattr(exc, "message", None) or str(exc)


def web_ui_link(settings: Settings, run_id: str) -> str:
    host, _ = settings.temporal_host_port
    host = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    return (
        f"http://{host}:{settings.temporal_ui_port}/namespaces/{settings.temporal_namespace}"
        f"/workflows/{run_id}"
    )


def exit_for(status: str) -> int:
    return EXIT_OK if status == RunStatus.DONE else EXIT_FAILED
