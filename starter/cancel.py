"""Cancel a run, with the Python API, and print how it ended.

python -m starter.cancel RUN_ID [--reason TEXT]
"""

from __future__ import annotations

import argparse
import asyncio

from agentrun.client import cancel_run, connect
from agentrun.process import exit_process
from agentrun.settings import load_settings


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_id")
    parser.add_argument("--reason")
    args = parser.parse_args()

    client = await connect(load_settings())
    answer = await cancel_run(client, args.run_id, reason=args.reason, requested_by="cancel.py")
    print(f"{answer.status}: {answer.message}")


if __name__ == "__main__":
    asyncio.run(main())
    exit_process(0)  # see agentrun.process: no teardown crash after a Temporal client
