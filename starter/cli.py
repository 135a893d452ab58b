"""The `agentrun` command line."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence

from rich.console import Console

from agentrun.process import exit_process
from agentrun.stack import StackError
from starter.commands import (
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    print_json,
    settings_or_exit,
)

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

__all__ = ["CliError", "main", "print_json"]


# -- agentrun dev ------------------------------------------------------------------------------


async def _dev(args: argparse.Namespace) -> int:
    from agentrun.devstack import DevStack
    from worker import run_worker

    settings = settings_or_exit()
    stack = DevStack(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        with console.status("starting the agentrun stack..."):
            await stack.up()
        for note in stack.notes:
            console.print(f"  [green]•[/] {note}")
        if stack.postgres is None and stack.temporal is None:
            console.print("[bold]A stack is already running; reusing it.[/]")
        console.print(
            f"[bold green]agentrun stack ready[/] in {stack.started_in_s:.1f}s\n"
            f"  Temporal   {settings.temporal_address} (namespace {settings.temporal_namespace})\n"
            f"  Web UI     {stack.ui_url}\n"
            f"  PostgreSQL {settings.database_url_display}\n"
            f"  Model      "
            + (
                "offline scripted model (set OPENAI_BASE_URL for a real one)"
                if settings.uses_offline_model
                else f"{settings.model} at {settings.openai_base_url}"
            )
        )
        if args.no_worker:
            console.print("Press Ctrl-C to stop.")
            await stop.wait()
        else:
            console.print(
                f"  Worker     polling task queue {settings.task_queue!r}; Ctrl-C stops all"
            )
            await run_worker(settings, stop, migrate=False)
    finally:
        with console.status("stopping..."):
            await asyncio.to_thread(stack.down)
        console.print("stopped.")
    return EXIT_OK


# -- agentrun db ------------------------------------------------------------------------------


def _db(args: argparse.Namespace) -> int:
    from agentrun.db.migrate import current_revision, head_revision, upgrade

    settings = settings_or_exit()
    try:
        if args.db_command == "upgrade":
            revision = upgrade(settings.sqlalchemy_url)
            console.print(f"database at revision {revision} (head {head_revision()})")
        else:
            console.print(f"database at revision {current_revision(settings.sqlalchemy_url)}")
    except Exception as exc:
        raise CliError(
            f"cannot reach the database at {settings.database_url_display}: {_first_line(exc)}; "
            "start it (agentrun dev) or set AGENTRUN_DATABASE_URL",
            EXIT_UNREACHABLE,
        ) from None
    return EXIT_OK


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- agentrun worker ---------------------------------------------------------------------------


def _worker(args: argparse.Namespace) -> int:
    from worker import main as worker_main

    worker_main([])
    return EXIT_OK


# -- agentrun codec-server ---------------------------------------------------------------------


def _codec_server(args: argparse.Namespace) -> int:
    from agentrun.codec_server import CodecServer
    from agentrun.converter import codec_from_settings

    overrides = {
        k: v
        for k, v in {"codec_server_host": args.host, "codec_server_port": args.port}.items()
        if v is not None
    }
    settings = settings_or_exit(**overrides)
    codec = codec_from_settings(settings)
    if not codec.encrypts:
        raise CliError(
            "AGENTRUN_PAYLOAD_KEYS is not set: there is nothing to decode. Set the same keys "
            "as the workers (id:base64key,...)",
            EXIT_USAGE,
        )
    token = settings.codec_server_token
    try:
        server = CodecServer(
            codec,
            host=settings.codec_server_host,
            port=settings.codec_server_port,
            token=(token.get_secret_value() or None) if token else None,
            cors_origins=settings.cors_origins,
        )
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    except OSError as exc:
        raise CliError(
            f"cannot listen on {settings.codec_server_host}:{settings.codec_server_port}: "
            f"{exc.strerror or exc}; free the port or set AGENTRUN_CODEC_SERVER_PORT",
            EXIT_UNREACHABLE,
        ) from None
    console.print(
        f"[bold green]codec server[/] on {server.url} (POST /encode, /decode), keys "
        f"{', '.join(codec.key_ids)}; token {'required' if token else 'not set (local only)'}\n"
        f"  Web UI: Settings > Codec Server > {server.url} (origins: "
        f"{', '.join(settings.cors_origins) or 'none'})\n"
        f"  CLI:    temporal workflow show -w RUN_ID --codec-endpoint {server.url}"
        + (" --codec-auth 'Bearer $TOKEN'" if token else "")
        + "\nPress Ctrl-C to stop."
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return EXIT_OK


# -- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentrun",
        description="Durable LLM agent runs on Temporal, recorded in Postgres.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser(
        "dev", help="start Temporal, PostgreSQL and a worker on this machine (Ctrl-C stops)"
    )
    dev.add_argument("--no-worker", action="store_true", help="start the servers only")
    dev.set_defaults(handler=_dev, is_async=True)

    db = sub.add_parser("db", help="database migrations")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("upgrade", help="migrate the database to the newest schema")
    db_sub.add_parser("current", help="print the database's schema revision")
    db.set_defaults(handler=_db, is_async=False)

    worker = sub.add_parser("worker", help="run a worker (same as agentrun-worker)")
    worker.set_defaults(handler=_worker, is_async=False)

    codec = sub.add_parser(
        "codec-server",
        help="serve /encode and /decode for the Temporal Web UI and CLI (encrypted payloads)",
    )
    codec.add_argument("--host", help="override AGENTRUN_CODEC_SERVER_HOST (default 127.0.0.1)")
    codec.add_argument("--port", type=int, help="override AGENTRUN_CODEC_SERVER_PORT (8081)")
    codec.set_defaults(handler=_codec_server, is_async=False)

    from starter.commands import register

    register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.is_async:
            code = asyncio.run(args.handler(args))
        else:
            code = args.handler(args)
    except CliError as exc:
        err_console.print(f"agentrun: {exc}", style="red", markup=False)
        code = exc.code
    except StackError as exc:
        err_console.print(f"agentrun: {exc}", style="red", markup=False)
        code = EXIT_UNREACHABLE
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # one line, never a traceback
        err_console.print(
            f"agentrun: unexpected error: {type(exc).__name__}: {exc}", style="red", markup=False
        )
        code = 1
    exit_process(code)


if __name__ == "__main__":
    main()
