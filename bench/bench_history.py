"""Temporal history per run: flat along a session of 50 runs, and independent of the size of
a run's config (the system prompt)."""

from __future__ import annotations

import uuid
from typing import Any

from bench_harness import Bench

from agentrun.testing.offline_model import Reply, ToolCallSpec


async def bench_history(b: Bench) -> None:
    session = f"hist-{uuid.uuid4().hex[:6]}"
    sizes = []
    for n in range(50):
        run_id = f"{session}-{n:02d}"
        b.model.script(
            run_id,
            [
                Reply(text="c", tool_calls=[ToolCallSpec("calculator", {"expression": f"{n}+1"})]),
                Reply(text=f"answer {n:02d} " + "words " * 40),
            ],
        )
        await b.agent_run(run_id, f"history {run_id}", session=session)
        info = (await b.client.get_workflow_handle(run_id).describe()).raw_description
        sizes.append(
            (
                info.workflow_execution_info.history_length,
                info.workflow_execution_info.history_size_bytes,
            )
        )
    (e1, b1), (e50, b50) = sizes[0], sizes[-1]
    b.row("history at run 1 of a session", f"{e1} events, {b1} B")
    b.row(
        "history at run 50 of a session",
        f"{e50} events, {b50} B",
        "within 10%",
        abs(b50 - b1) <= 0.1 * b1 and abs(e50 - e1) <= 0.1 * e1,
    )


async def bench_config_history(b: Bench) -> None:
    """History per run must not depend on the size of the run's config: an 8-turn run (7 tool
    turns and an answer) with the default system prompt against one with 99,000 characters."""
    sizes = {}
    for label, system_prompt in (("default", None), ("99k", "You are careful. " * 5_823)):
        run_id = f"cfg-{label}-{uuid.uuid4().hex[:6]}"
        b.model.script(
            run_id,
            [
                *(
                    Reply(
                        text="c", tool_calls=[ToolCallSpec("calculator", {"expression": f"{n}+1"})]
                    )
                    for n in range(7)
                ),
                Reply(text="done"),
            ],
        )
        cfg: dict[str, Any] = {"max_turns": 8}
        if system_prompt is not None:
            cfg["system_prompt"] = system_prompt
        await b.agent_run(run_id, f"config history {run_id}", **cfg)
        info = (await b.client.get_workflow_handle(run_id).describe()).raw_description
        sizes[label] = (
            info.workflow_execution_info.history_length,
            info.workflow_execution_info.history_size_bytes,
        )
    (e0, b0), (e1, b1) = sizes["default"], sizes["99k"]
    b.row("history of an 8-turn run, default system prompt", f"{e0} events, {b0} B")
    # The 99k prompt is in the workflow input once; nothing per turn may grow with it.
    b.row(
        "history of an 8-turn run with a 99k system prompt",
        f"{e1} events, {b1} B",
        "≤ default + 120 KB",
        b1 <= b0 + 120_000,
    )
