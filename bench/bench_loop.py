"""The agent loop's own cost: a run of 2 turns and 2 tool calls, a burst of tokens, and the
durability overhead of a run against a bare workflow of no-op activities of the same shape."""

from __future__ import annotations

import statistics
import time
import uuid

from bench_harness import Bench
from bench_workflows import BareInput, BareWorkflow

from agentrun.protocol.events import EventType
from agentrun.testing.offline_model import Reply, ToolCallSpec


async def bench_loop(b: Bench) -> None:
    """The agent loop's own numbers: a run of 2 turns and 2 parallel tool calls."""
    walls, history = [], (0, 0)
    for i in range(7):
        run_id = f"loop-{i}-{uuid.uuid4().hex[:6]}"
        b.model.script(
            run_id,
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
        t0 = time.perf_counter()
        await b.agent_run(run_id, f"two tools {run_id}")
        if i > 0:  # the first run warms the worker up
            walls.append(time.perf_counter() - t0)
        info = (await b.client.get_workflow_handle(run_id).describe()).raw_description
        history = (
            info.workflow_execution_info.history_length,
            info.workflow_execution_info.history_size_bytes,
        )
    b.row("history of a run with 2 turns + 2 tool calls", f"{history[0]} events, {history[1]} B")
    b.row(
        "wall time, 2 turns + 2 tools, zero-latency model",
        f"{statistics.median(walls) * 1000:.0f} ms",
    )
    run_id = f"burst-{uuid.uuid4().hex[:6]}"
    b.model.script(run_id, [Reply(text="tok " * 1000, chunk_chars=4)])
    await b.agent_run(run_id, f"burst {run_id}", tools=[])
    events = await b.repo.read_events(run_id, 0, limit=100_000)
    deltas = sum(e.type == EventType.MESSAGE_DELTA for e in events)
    b.row("DB commits per 1,000 tokens (zero-latency burst)", f"{deltas}")


async def bench_overhead(b: Bench) -> None:
    turns = [2, 2, 0]  # k = 3 model turns, m = 4 tool calls
    ours, bare = [], []
    for i in range(12):
        run_id = f"ovh-{i}-{uuid.uuid4().hex[:6]}"
        b.model.script(
            run_id,
            [
                Reply(
                    text="a",
                    tool_calls=[
                        ToolCallSpec("calculator", {"expression": "1+1"}),
                        ToolCallSpec("calculator", {"expression": "2+2"}),
                    ],
                ),
                Reply(
                    text="b",
                    tool_calls=[
                        ToolCallSpec("calculator", {"expression": "3+3"}),
                        ToolCallSpec("calculator", {"expression": "4+4"}),
                    ],
                ),
                Reply(text="done"),
            ],
        )
        t0 = time.perf_counter()
        await b.agent_run(run_id, f"overhead {run_id}")
        t1 = time.perf_counter()
        await b.client.execute_workflow(
            BareWorkflow.run,
            BareInput(turns=turns),
            id=f"bare-{run_id}",
            task_queue=b.settings.task_queue,
        )
        t2 = time.perf_counter()
        if i >= 2:  # warm-up
            ours.append(t1 - t0)
            bare.append(t2 - t1)
    o, r = statistics.median(ours), statistics.median(bare)
    b.row("agent run, 3 turns + 4 tool calls, zero-latency model", f"{o * 1000:.0f} ms")
    b.row("bare workflow, 3 + 4 no-op activities", f"{r * 1000:.0f} ms")
    b.row("durability overhead (agent run / bare)", f"{o / r:.2f}×", "≤ 1.3×", o / r <= 1.3)
