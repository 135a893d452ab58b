"""The CLI's exit codes and its one error type, shared by the parser (starter.cli) and every
command: a failure is a CliError with one line that says what to do, and one of these codes."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # the run did not end DONE, or a request was refused
EXIT_USAGE = 2  # bad arguments, options or settings
EXIT_UNREACHABLE = 3  # Temporal or PostgreSQL cannot be reached
EXIT_NOT_FOUND = 4  # no such run, session or tool call
EXIT_INTERRUPTED = 130  # Ctrl-C


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code
