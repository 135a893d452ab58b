"""Record the histories of the ops2 helper's change (tests/histories/v6-ops2/): the retention
workflow with webhook delivery pruning on (RetentionInput.delivery_days) as well as session
retention, with record.py's servers and helpers (its scenarios replaced by this one).

    python -m tests.histories.record_ops2 v6-ops2
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from temporalio.client import Client

from agentrun.contracts.retention import RetentionInput
from agentrun.testing.offline_model import OfflineModelServer
from tests.histories import record
from workflows.retention import SessionRetentionWorkflow


async def retention_deliveries(client: Client, tq: str, model: OfflineModelServer, rid: str) -> Any:
    # A finished run makes a session to delete; cutoffs a moment ago make it (and any ended
    # delivery) old enough.
    await record.plain(client, tq, model, f"{rid}-run")
    await asyncio.sleep(1)
    handle = await client.start_workflow(
        SessionRetentionWorkflow.run,
        RetentionInput(idle_days=0.5 / 86400, batch=10, delivery_days=0.5 / 86400),
        id=rid,
        task_queue=tq,
    )
    summary = await handle.result()
    assert summary.deleted >= 1, summary
    return handle


SCENARIOS: dict[str, record.Scenario] = {"retention_deliveries": retention_deliveries}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m tests.histories.record_ops2 <label>")
    record.SCENARIOS = SCENARIOS
    asyncio.run(record.record(record.HERE / args[0]))


if __name__ == "__main__":
    main()
