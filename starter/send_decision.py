"""Approve or reject every call a run is waiting on, with the Python API.

    python -m starter.send_decision RUN_ID approve|reject [--reason TEXT] [--by NAME]

It reads the pending calls with the `status` query and answers each with the
`decide_tool_call` update, bound to the arguments it was shown (arguments_sha256).
"""

from __future__ import annotations

import argparse
import asyncio

from agentrun.client import connect, decide, run_status
from agentrun.process import exit_process
from agentrun.protocol.statuses import Decision, WaitKind
from agentrun.settings import load_settings


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_id")
    parser.add_argument("decision", choices=[Decision.APPROVE.value, Decision.REJECT.value])
    parser.add_argument("--reason")
    parser.add_argument("--by", default="send_decision.py")
    args = parser.parse_args()

    client = await connect(load_settings())
    view = await run_status(client, args.run_id)
    approvals = [p for p in view.pending if p.kind == WaitKind.APPROVAL]
    if not approvals:
        print(f"run {args.run_id} waits for no approval (status {view.status})")
        return
    for pending in approvals:
        recorded = await decide(
            client,
            args.run_id,
            pending.tool_call_id,
            args.decision,
            arguments_sha256=pending.arguments_sha256,
            decided_by=args.by,
            reason=args.reason,
        )
        print(f"{recorded.decision} {recorded.name} {recorded.tool_call_id}")


if __name__ == "__main__":
    asyncio.run(main())
    exit_process(0)  # see agentrun.process: no teardown crash after a Temporal client
