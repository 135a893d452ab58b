"""Temporal history of one very long run (issue 16 item 3; not run in CI): events and bytes of
the run's current execution at turn 1, 100 and 300 of a 300-turn run, with continue-as-new at
its default (every 100 turns) and without it (continue_as_new_after_turns=None: only when
Temporal suggests it). Writes its own section of bench/RESULTS.md (between the
`bench/history_size.py: begin/end` markers); the other sections stay.

    python bench/history_size.py          # about three minutes on 2 cores

The stack is bench/run.py's (its own PostgreSQL, Temporal dev server, offline model and one
in-process worker). Each turn is a calculator call; turn 300 answers. "At turn N" is the history
of the execution that took turn N, from its start to the end of turn N (before turn N+1's model
activity is scheduled, or to its close); bytes are the serialized events' sizes.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import run as bench_run  # noqa: E402
from bench_harness import Bench, write_section  # noqa: E402
from temporalio.api.enums.v1 import EventType  # noqa: E402
from temporalio.client import WorkflowHistory  # noqa: E402

from agentrun.client import run_histories  # noqa: E402
from agentrun.protocol.names import Activity  # noqa: E402
from agentrun.stack import EmbeddedPostgres, free_port  # noqa: E402
from agentrun.testing.offline_model import Reply, ToolCallSpec  # noqa: E402

TURNS = 300
AT_TURNS = (1, 100, 300)
BEGIN = "<!-- bench/history_size.py: begin (rewritten by each run) -->"
END = "<!-- bench/history_size.py: end -->"


def turn_ends(histories: list[WorkflowHistory]) -> dict[int, tuple[int, int, int]]:
    """For each turn of the run: (execution number, events, bytes) of that execution's history
    from its start to the end of the turn."""
    ends: dict[int, tuple[int, int, int]] = {}
    turn = 0
    for number, history in enumerate(histories, 1):
        starts = [
            i
            for i, e in enumerate(history.events)
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and e.activity_task_scheduled_event_attributes.activity_type.name == Activity.MODEL_TURN
        ]
        for k in range(len(starts)):
            end = starts[k + 1] if k + 1 < len(starts) else len(history.events)
            size = sum(e.ByteSize() for e in history.events[:end])
            turn += 1
            ends[turn] = (number, end, size)
    return ends


async def one_run(b: Bench, label: str, **cfg: Any) -> list[WorkflowHistory]:
    run_id = f"long-{label}-{uuid.uuid4().hex[:6]}"
    b.model.script(
        run_id,
        [
            *(
                Reply(tool_calls=[ToolCallSpec("calculator", {"expression": f"{n}+1"})])
                for n in range(TURNS - 1)
            ),
            Reply(text="done"),
        ],
    )
    result = await b.agent_run(
        run_id,
        f"long run {run_id}",
        tools=["calculator"],
        max_turns=TURNS,
        max_tool_calls=TURNS,
        **cfg,
    )
    assert result.status == "DONE" and result.usage.turns == TURNS, result
    return await run_histories(b.client, run_id)


async def bench_history_size(b: Bench) -> None:
    for label, cfg, what in (
        ("default", {}, "continue-as-new every 100 turns (default)"),
        ("never", {"continue_as_new_after_turns": None}, "no continue-as-new"),
    ):
        histories = await one_run(b, label, **cfg)
        ends = turn_ends(histories)
        assert sorted(ends) == list(range(1, TURNS + 1)), sorted(ends)[-3:]
        for turn in AT_TURNS:
            number, events, size = ends[turn]
            b.row(
                f"history at turn {turn} of a {TURNS}-turn run, {what}",
                f"{events} events, {size} B (execution {number})",
            )
        total = sum(len(h.events) for h in histories)
        b.row(f"executions and events of the whole run, {what}", f"{len(histories)}, {total}")


def write_results(rows: list[tuple[str, str, str, str]]) -> None:
    section = "\n".join(
        [
            BEGIN,
            "",
            "## History of one very long run (issue 16 item 3)",
            "",
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python bench/history_size.py`"
            " (bench/run.py's stack, one worker, 2 cores shared with other test runs). A run of "
            f"{TURNS} turns, each a calculator call but the last; the history of the execution "
            "that took turn N, from its start to the end of turn N (serialized event bytes).",
            "",
            "| measure | value |",
            "|---|---|",
            *(f"| {name} | {value} |" for name, value, _, _ in rows),
            "",
            END,
        ]
    )
    write_section(section, BEGIN, END)


async def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="agentrun-bench-long-"))
    pg = EmbeddedPostgres(tmp / "pg", free_port(), extra_options=("-c", "fsync=off"))
    pg.start()
    bench_run.PARTS["history_size"] = bench_history_size
    try:
        rows = await bench_run._measure(["history_size"], bench_run._database(pg), tmp)
    finally:
        pg.stop()
    write_results(rows)


if __name__ == "__main__":
    asyncio.run(main())
