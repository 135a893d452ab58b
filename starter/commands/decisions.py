"""approve, reject and cancel: a person's word on a run, through agentrun.client. A refusal
says why (its type comes from the workflow's ApplicationError, see agentrun.client.errors)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agentrun.client import (
    Refused,
    RunEnded,
    RunNotFound,
    cancel_run,
    decide,
    signal_decision,
)
from agentrun.protocol.statuses import Decision
from starter.connect import run_gone, settings_or_exit, temporal
from starter.exits import EXIT_OK, EXIT_USAGE, CliError
from starter.output import console, first_error, print_json

DEFAULT_DECIDER = "agentrun cli"


def _decision(args: argparse.Namespace) -> tuple[Decision, dict[str, Any] | None]:
    if args.command == "reject":
        return Decision.REJECT, None
    if args.args is None:
        return Decision.APPROVE, None
    try:
        arguments = json.loads(args.args)
    except ValueError as exc:
        raise CliError(f"--args is not JSON: {exc}", EXIT_USAGE) from None
    if not isinstance(arguments, dict):
        raise CliError("--args must be a JSON object", EXIT_USAGE)
    return Decision.APPROVE_WITH_EDITS, arguments


async def cmd_decide(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    decision, arguments = _decision(args)
    client = await temporal(settings)
    fields: dict[str, Any] = {
        "arguments": arguments,
        "decided_by": args.by or DEFAULT_DECIDER,
        "reason": args.reason,
    }
    try:
        if args.signal:
            await signal_decision(client, args.run_id, args.tool_call_id, decision, **fields)
        else:
            recorded = await decide(client, args.run_id, args.tool_call_id, decision, **fields)
    except Refused as exc:
        raise CliError(f"decision refused: {exc}") from None
    except (RunNotFound, RunEnded) as exc:
        raise run_gone(exc) from None
    except ValueError as exc:
        raise CliError(f"bad decision: {first_error(exc)}", EXIT_USAGE) from None
    if args.signal:
        out = {"run_id": args.run_id, "tool_call_id": args.tool_call_id, "signalled": decision}
        print_json(out) if args.json else console.print(f"signalled {decision}", soft_wrap=True)
    elif args.json:
        print_json(recorded.model_dump())
    else:
        console.print(
            f"{recorded.decision} {recorded.name} ({recorded.tool_call_id}) "
            f"by {recorded.decided_by}",
            soft_wrap=True,
            markup=False,
        )
    return EXIT_OK


async def cmd_cancel(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    client = await temporal(settings)
    try:
        answer = await cancel_run(client, args.run_id, reason=args.reason, requested_by="cli")
    except RunNotFound as exc:
        raise run_gone(exc) from None
    if args.json:
        print_json({"run_id": args.run_id, **answer.model_dump()})
    else:
        console.print(f"{answer.status}: {answer.message}", soft_wrap=True, markup=False)
    return EXIT_OK
