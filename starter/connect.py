"""Settings, Temporal and PostgreSQL for a command, each failing with one line that says how to
fix it; and the CLI's message and exit code for each typed client error."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

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
        except Exception:
            raise CliError(
                f"cannot reach PostgreSQL at {settings.database_url_display}: start it with "
                "`agentrun dev` or set AGENTRUN_DATABASE_URL",
                EXIT_UNREACHABLE,
            ) from None
        yield repo
    finally:
        await repo.close()


def run_gone(exc: RunNotFound | RunEnded) -> CliError:
    """The CLI's line for a run that does not exist or already ended."""
    if isinstance(exc, RunNotFound):
        return CliError(f"no run {exc.run_id!r}; list runs with `agentrun ls`", EXIT_NOT_FOUND)
    return CliError(str(exc), EXIT_FAILED)
