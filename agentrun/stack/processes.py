"""Shared helpers of the embedded stack: ports, local hosts, and the child processes (start,
wait until ready, stop, die with the parent)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


class StackError(Exception):
    """The stack cannot start; the message says what to do."""


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def is_local(host: str) -> bool:
    return host in LOCAL_HOSTS


def _wait_for(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None,
    log: Path | None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise StackError(f"{what} exited with code {proc.returncode} while starting.\n{tail}")
        if check():
            return
        time.sleep(0.1)
    raise StackError(f"{what} did not become ready within {timeout:.0f}s (log: {log})")


def _die_with_parent(sig: int) -> Callable[[], None]:
    """A preexec_fn: the kernel sends `sig` to the child when its parent dies, so a killed
    `agentrun dev` (or test run) leaves no server behind."""

    def preexec() -> None:
        if sys.platform.startswith("linux"):
            import ctypes

            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG

    return preexec


def _stop_process(proc: subprocess.Popen[bytes], sig: int, timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
