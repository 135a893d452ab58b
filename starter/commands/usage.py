"""usage and budget: the cost ledger grouped by model, day, session or run, and a session's
budget (README "Cost and budgets"). Straight in the database; no Temporal needed."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from rich.table import Table

from starter.connect import database, settings_or_exit
from starter.exits import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, CliError
from starter.output import console, print_json

_RELATIVE = re.compile(r"^(\d{1,6})([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`7d`, `24h`, `30m`, `2w` ago, or an ISO date or time (UTC unless it names a zone)."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliError(
            f"--since {text!r} is not a time: give e.g. 7d, 24h, 30m, 2w, 2026-11-01 or "
            "2026-11-01T08:00:00+00:00",
            EXIT_USAGE,
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _check_id(what: str, value: str | None) -> None:
    from agentrun.contracts import ID_PATTERN

    if value is not None and not re.match(ID_PATTERN, value):
        raise CliError(f"{what} {value!r} is not a valid id", EXIT_USAGE)


def _money(value: Decimal | None, unpriced: int = 0) -> str:
    text = "unknown" if value is None else f"${value.normalize():f}"
    return text + (f" (+{unpriced} unpriced)" if unpriced else "")


def _row_json(row: Any) -> dict[str, Any]:
    return {
        "key": row.key,
        "llm_calls": row.llm_calls,
        "prompt_tokens": row.prompt_tokens,
        "cached_tokens": row.cached_tokens,
        "completion_tokens": row.completion_tokens,
        "reasoning_tokens": row.reasoning_tokens,
        "total_tokens": row.total_tokens,
        # A string: exact, whatever the reader's float.
        "cost_usd": None if row.cost_usd is None else str(row.cost_usd),
        "unpriced_calls": row.unpriced_calls,
        "unpriced_models": row.unpriced_models,
    }


def _total(rows: list[Any]) -> Any:
    from agentrun.store.usage import UsageRow

    total = UsageRow(key="total")
    for r in rows:
        for name in (
            "llm_calls",
            "prompt_tokens",
            "cached_tokens",
            "completion_tokens",
            "reasoning_tokens",
            "unpriced_calls",
        ):
            setattr(total, name, getattr(total, name) + getattr(r, name))
        if r.cost_usd is not None:
            total.cost_usd = (total.cost_usd or Decimal(0)) + r.cost_usd
        total.unpriced_models = sorted({*total.unpriced_models, *r.unpriced_models})
    return total


async def cmd_usage(args: argparse.Namespace) -> int:
    _check_id("--session", args.session)
    since = parse_since(args.since) if args.since else None
    settings = settings_or_exit()
    async with database(settings) as repo:
        if args.session is not None:
            try:
                await repo.get_session(args.session)
            except LookupError:
                raise CliError(f"no session {args.session!r}", EXIT_NOT_FOUND) from None
        rows = await repo.usage_by(args.by, session_id=args.session, since=since)
    total = _total(rows)
    if args.json:
        print_json(
            {
                "by": args.by,
                "session": args.session,
                "since": since.isoformat() if since else None,
                "rows": [_row_json(r) for r in rows],
                "total": _row_json(total),
            }
        )
        return EXIT_OK
    title = f"usage by {args.by}"
    if since is not None:
        title += f" since {since.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    table = Table(title=title)
    for name in (args.by, "calls", "prompt", "cached", "completion", "reasoning", "cost USD"):
        table.add_column(name, justify="left" if name == args.by else "right")
    for r in [*rows, total]:
        table.add_row(
            r.key,
            str(r.llm_calls),
            str(r.prompt_tokens),
            str(r.cached_tokens),
            str(r.completion_tokens),
            str(r.reasoning_tokens),
            _money(r.cost_usd, r.unpriced_calls),
            end_section=r is rows[-1] if rows else False,
        )
    console.print(table)
    if total.unpriced_calls:
        console.print(
            f"{total.unpriced_calls} call(s) have no known price (models: "
            f"{', '.join(total.unpriced_models)}): their cost is not in the figures; set "
            "AGENTRUN_PRICES to price them.",
            markup=False,
            soft_wrap=True,
        )
    return EXIT_OK


def _budget_args(args: argparse.Namespace) -> tuple[Decimal | None, int | None]:
    cost: Decimal | None = None
    if args.max_cost_usd is not None:
        try:
            cost = Decimal(args.max_cost_usd)
        except InvalidOperation:
            raise CliError(
                f"--max-cost-usd {args.max_cost_usd!r} is not a number", EXIT_USAGE
            ) from None
    return cost, args.max_total_tokens


async def cmd_budget(args: argparse.Namespace) -> int:
    from agentrun.store.usage import check_session_budget

    _check_id("session", args.session_id)
    cost, tokens = _budget_args(args)
    setting = args.clear or cost is not None or tokens is not None
    if args.clear and (cost is not None or tokens is not None):
        raise CliError("--clear removes the budget: give it alone", EXIT_USAGE)
    try:
        check_session_budget(cost, tokens)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    settings = settings_or_exit()
    async with database(settings) as repo:
        try:
            session = await repo.get_session(args.session_id)
        except LookupError:
            if not setting:
                raise CliError(f"no session {args.session_id!r}", EXIT_NOT_FOUND) from None
            session = None
        if setting:
            keep_cost = session.max_cost_usd if session is not None and not args.clear else None
            keep_tokens = (
                session.max_total_tokens if session is not None and not args.clear else None
            )
            session = await repo.set_session_budget(
                args.session_id,
                cost if cost is not None else keep_cost,
                tokens if tokens is not None else keep_tokens,
            )
        used = await repo.session_usage(args.session_id)
    assert session is not None
    return _print_budget(args, session, used)


def _print_budget(args: argparse.Namespace, session: Any, used: Any) -> int:
    out = {
        "session": session.id,
        "max_cost_usd": None if session.max_cost_usd is None else str(session.max_cost_usd),
        "max_total_tokens": session.max_total_tokens,
        "used": {
            "cost_usd": None if used.cost_usd is None else str(used.cost_usd),
            "total_tokens": used.total_tokens,
            "llm_calls": used.llm_calls,
            "unpriced_calls": used.unpriced_calls,
        },
    }
    if args.json:
        print_json(out)
        return EXIT_OK
    limits = []
    if session.max_cost_usd is not None:
        limits.append(f"{_money(session.max_cost_usd)}")
    if session.max_total_tokens is not None:
        limits.append(f"{session.max_total_tokens} tokens")
    console.print(
        f"session {session.id}: budget {' and '.join(limits) or 'none'}; used so far "
        f"{_money(used.cost_usd, used.unpriced_calls)} and {used.total_tokens} tokens in "
        f"{used.llm_calls} model call(s). The session's next run checks it when it opens.",
        markup=False,
        soft_wrap=True,
    )
    return EXIT_OK
