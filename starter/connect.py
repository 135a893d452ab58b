"""Settings, Temporal and PostgreSQL for a command, each failing with one line that says how to
fix it; and the CLI's message and exit code for each typed client error.

A database that cannot be used is told apart by what went wrong, each with its own fix: no server
answers, the server has no such database, it refuses the user or password, or the schema is
behind this agentrun's migrations. libpq reports a failed connection without a SQLSTATE, so its
message is read too (the SQLSTATE wins when there is one)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from temporalio.client import Client

from agentrun.client import RunEnded, RunNotFound, connect
from agentrun.settings import Settings, SettingsError, load_settings
from agentrun.store import Repository
from starter.exits import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_USAGE, CliError


def settings_or_exit(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


async def temporal(settings: Settings) -> Client:
    try:
        client = await asyncio.wait_for(connect(settings), 5)
        await asyncio.wait_for(client.service_client.check_health(), 5)
        return client
    except Exception:
        raise CliError(
            f"cannot reach Temporal at {settings.temporal_address}: start it with "
            "`agentrun dev` or set TEMPORAL_ADDRESS",
            EXIT_UNREACHABLE,
        ) from None


@contextlib.asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[Repository]:
    from sqlalchemy import text

    repo = Repository.connect(settings.sqlalchemy_url, pool_size=2)
    try:
        try:
            async with repo.engine.connect() as conn:
                await asyncio.wait_for(conn.execute(text("SELECT 1")), 5)
                revision = await _schema_revision(conn)
        except Exception as exc:
            raise database_error(exc, settings) from None
        problem = schema_error(revision, settings)
        if problem is not None:
            raise problem
        yield repo
    finally:
        await repo.close()


async def _schema_revision(conn: Any) -> str | None:
    from sqlalchemy import text
    from sqlalchemy.exc import ProgrammingError

    try:
        return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    except ProgrammingError:  # no alembic_version table: never migrated
        return None


def database_error(exc: BaseException, settings: Settings) -> CliError:
    """The line for a database the CLI could not connect to, by what went wrong."""
    orig = getattr(exc, "orig", None) or exc
    sqlstate = getattr(orig, "sqlstate", None)
    text = str(orig)
    parts = urlsplit(settings.database_url)
    server = f"PostgreSQL at {parts.hostname or '127.0.0.1'}:{parts.port or 5432}"
    name = parts.path.lstrip("/")
    if sqlstate == "3D000" or re.search(r'database "[^"]*" does not exist', text):
        return CliError(
            f"{server} answered, but it has no database {name!r}: create it (`createdb {name}`; "
            "`agentrun dev` creates it on a local server) or fix the name in "
            "AGENTRUN_DATABASE_URL",
            EXIT_UNREACHABLE,
        )
    if sqlstate in ("28P01", "28000") or re.search(
        r'password authentication failed|role "[^"]*" does not exist|no pg_hba\.conf entry|'
        r"password (?:is )?required|authentication failed",
        text,
    ):
        return CliError(
            f"{server} answered, but refused to log in user {parts.username or 'postgres'!r} "
            f"({_fatal(text)}): fix the user and password in AGENTRUN_DATABASE_URL",
            EXIT_UNREACHABLE,
        )
    reason = _fatal(text) if text.strip() else type(orig).__name__
    return CliError(
        f"cannot reach PostgreSQL at {settings.database_url_display} ({reason}): start it with "
        "`agentrun dev` or set AGENTRUN_DATABASE_URL",
        EXIT_UNREACHABLE,
    )


def _fatal(text: str) -> str:
    """libpq's reason, without its `connection to server at ... failed:` preamble."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    reason = re.split(r"failed:\s*", first)[-1]
    return re.sub(r"^(?:FATAL|ERROR):\s*", "", reason).strip()[:200] or first[:200]


def schema_error(revision: str | None, settings: Settings) -> CliError | None:
    """None when the schema is at this agentrun's head (or newer: written by a newer
    agentrun, which this one can read); else the line that says to migrate."""
    from alembic.script import ScriptDirectory

    from agentrun.db.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config("postgresql://"))
    head = script.get_current_head()
    if revision == head:
        return None
    if revision is not None:
        try:
            script.get_revision(revision)
        except Exception:
            return None  # a revision this agentrun does not know: a newer schema
    where = settings.database_url_display
    state = "has no agentrun tables" if revision is None else f"is at revision {revision}"
    return CliError(
        f"the database at {where} {state}, behind this agentrun's {head}: run "
        "`agentrun db upgrade` (workers migrate on start too)",
        EXIT_UNREACHABLE,
    )


def run_gone(exc: RunNotFound | RunEnded) -> CliError:
    """The CLI's line for a run that does not exist or already ended."""
    if isinstance(exc, RunNotFound):
        return CliError(f"no run {exc.run_id!r}; list runs with `agentrun ls`", EXIT_NOT_FOUND)
    return CliError(str(exc), EXIT_FAILED)
