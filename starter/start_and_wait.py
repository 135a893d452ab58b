"""Start a run and wait for its result, with the Python API.

    python -m starter.start_and_wait "what is 6*7?" [--session ID] [--run-id ID]

Prints the run's result as JSON. Nobody is there to approve a call, so the run is offered only
the read-only built-in tools, which need no approval. Settings (TEMPORAL_ADDRESS,
AGENTRUN_TASK_QUEUE, ...) come from the environment, as for every agentrun command.
"""

from __future__ import annotations

import argparse
import asyncio

from agentrun.client import connect, start_run
from agentrun.contracts import AgentConfig
from agentrun.process import exit_process
from agentrun.protocol.statuses import ApprovalPreset
from agentrun.settings import load_settings

READ_ONLY_TOOLS = ("ls", "read_file", "current_time", "calculator")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("prompt")
    parser.add_argument("--session")
    parser.add_argument("--run-id")
    args = parser.parse_args()

    settings = load_settings()
    client = await connect(settings)
    handle = await start_run(
        client,
        settings.task_queue,
        args.prompt,
        session_id=args.session,
        run_id=args.run_id,
        config=AgentConfig(tools=list(READ_ONLY_TOOLS), approval=ApprovalPreset.ALLOW_SAFE),
    )
    result = await handle.result()
    print(result.model_dump_json())


if __name__ == "__main__":
    asyncio.run(main())
    exit_process(0)  # see agentrun.process: no teardown crash after a Temporal client
