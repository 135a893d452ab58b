"""db, worker and codec-server: the operator's commands."""

from __future__ import annotations

import argparse

from starter.connect import database_error, settings_or_exit
from starter.exits import EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, CliError
from starter.output import console, print_json


def cmd_db(args: argparse.Namespace) -> int:
    from agentrun.db.migrate import current_revision, head_revision, upgrade

    settings = settings_or_exit()
    try:
        if args.db_command == "upgrade":
            revision = upgrade(settings.sqlalchemy_url)
        else:
            revision = current_revision(settings.sqlalchemy_url)
    except Exception as exc:
        raise database_error(exc, settings) from None
    head = head_revision()
    if args.json:
        print_json(
            {
                "database": settings.database_url_display,
                "revision": revision,
                "head": head,
                "up_to_date": revision == head,
            }
        )
    elif args.db_command == "upgrade":
        console.print(f"database at revision {revision} (head {head})")
    else:
        behind = "" if revision == head else f" (head {head}: run `agentrun db upgrade`)"
        console.print(f"database at revision {revision}{behind}")
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    from worker import main as worker_main

    worker_main([*(["--json"] if args.json else []), "--processes", str(args.processes)])
    return EXIT_OK


def cmd_codec_server(args: argparse.Namespace) -> int:
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
    if args.json:
        print_json(
            {
                "event": "listening",
                "url": server.url,
                "keys": codec.key_ids,
                "token_required": bool(token),
                "cors_origins": settings.cors_origins,
            }
        )
    else:
        _codec_banner(server.url, codec.key_ids, bool(token), settings.cors_origins)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    if args.json:
        print_json({"event": "stopped"})
    return EXIT_OK


def _codec_banner(url: str, key_ids: list[str], token: bool, origins: list[str]) -> None:
    console.print(
        f"[bold green]codec server[/] on {url} (POST /encode, /decode), keys "
        f"{', '.join(key_ids)}; token {'required' if token else 'not set (local only)'}\n"
        f"  Web UI: Settings > Codec Server > {url} (origins: "
        f"{', '.join(origins) or 'none'})\n"
        f"  CLI:    temporal workflow show -w RUN_ID --codec-endpoint {url}"
        + (" --codec-auth 'Bearer $TOKEN'" if token else "")
        + "\nPress Ctrl-C to stop."
    )
