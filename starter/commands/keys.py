"""keys create, list and revoke: the HTTP API's keys, straight in the database (no server)."""

from __future__ import annotations

import argparse
from typing import Any

from starter.connect import database, settings_or_exit
from starter.exits import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, CliError
from starter.output import console, print_json

# What a key may do when --scope is not given.
DEFAULT_SCOPES = ("read", "write", "approve")


def _key_json(key: Any) -> dict[str, Any]:
    return {
        "id": key.id,
        "tenant": key.tenant,
        "name": key.name,
        "scopes": sorted(s.value for s in key.scopes),
        "created_at": key.created_at.isoformat(),
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


def _when(stamp: Any) -> str:
    return stamp.strftime("%Y-%m-%d %H:%M:%S") if stamp else "never"


async def cmd_keys_create(args: argparse.Namespace) -> int:
    from agentrun.store.keys import check_name, check_scopes

    try:
        check_name("tenant", args.tenant)
        check_name("key name", args.name)
        scopes = check_scopes(args.scope or DEFAULT_SCOPES)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    settings = settings_or_exit()
    async with database(settings) as repo:
        try:
            key, token = await repo.create_api_key(args.tenant, args.name, scopes)
        except ValueError as exc:  # a live key of that name
            raise CliError(str(exc), EXIT_FAILED) from None
    if args.json:
        print_json({**_key_json(key), "token": token})
        return EXIT_OK
    console.print(
        f"created key {key.id} {key.name!r} of tenant {key.tenant!r} "
        f"(scopes: {', '.join(sorted(s.value for s in key.scopes))})",
        markup=False,
        soft_wrap=True,
    )
    console.print("its token, shown this once (only a hash is kept):", markup=False)
    console.print(token, markup=False, soft_wrap=True)
    return EXIT_OK


async def cmd_keys_list(args: argparse.Namespace) -> int:
    from agentrun.store.keys import check_name

    if args.tenant is not None:
        try:
            check_name("tenant", args.tenant)
        except ValueError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
    settings = settings_or_exit()
    async with database(settings) as repo:
        keys = await repo.list_api_keys(args.tenant)
    if args.json:
        for key in keys:
            print_json(_key_json(key))
        return EXIT_OK
    if not keys:
        where = f" of tenant {args.tenant!r}" if args.tenant else ""
        console.print(
            f"no API keys{where}; create one with `agentrun keys create --name NAME`",
            markup=False,
        )
        return EXIT_OK
    for key in keys:
        state = f"revoked {_when(key.revoked_at)}" if key.revoked_at else "live"
        console.print(
            f"{key.id}  {key.tenant}  {key.name}  "
            f"[{','.join(sorted(s.value for s in key.scopes))}]  {state}  "
            f"created {_when(key.created_at)}  last used {_when(key.last_used_at)}",
            markup=False,
            soft_wrap=True,
        )
    return EXIT_OK


async def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from agentrun.store import NotFoundError

    settings = settings_or_exit()
    async with database(settings) as repo:
        before = {k.id: k for k in await repo.list_api_keys(args.tenant)}
        try:
            key = await repo.revoke_api_key(args.key, args.tenant)
        except NotFoundError as exc:
            raise CliError(f"{exc}; list keys with `agentrun keys list`", EXIT_NOT_FOUND) from None
        except ValueError as exc:  # a name several tenants use
            raise CliError(str(exc), EXIT_USAGE) from None
    already = key.id in before and before[key.id].revoked_at is not None
    if args.json:
        print_json({**_key_json(key), "already_revoked": already})
        return EXIT_OK
    if already:
        console.print(
            f"key {key.id} {key.name!r} of tenant {key.tenant!r} was already revoked "
            f"({_when(key.revoked_at)})",
            markup=False,
            soft_wrap=True,
        )
    else:
        console.print(
            f"revoked key {key.id} {key.name!r} of tenant {key.tenant!r}: it is refused from "
            "now on",
            markup=False,
            soft_wrap=True,
        )
    return EXIT_OK
