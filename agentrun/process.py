"""Process exit for short-lived Temporal clients."""

from __future__ import annotations

import contextlib
import logging
import os
import sys


def exit_process(code: int) -> None:
    """Flush and leave without interpreter teardown.

    The Temporal client's Rust runtime keeps threads that can call into Python while CPython
    finalizes, which aborts the process ("PyGILState_Release: thread state ... must be current",
    temporalio/sdk-python#300) after all the work is done, turning a success into SIGABRT.
    Everything that matters is flushed here first; the servers a command started were stopped
    by then.
    """
    with contextlib.suppress(Exception):
        from agentrun.telemetry.tracing import shutdown_tracing

        shutdown_tracing()  # os._exit skips atexit: spans still buffered are sent now
    with contextlib.suppress(Exception):
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
