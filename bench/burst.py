"""The worker under a burst (issue 12 item 9; not run in CI). Prints a table.

    python bench/burst.py                 # 200 runs, workers of 1 and 2 processes
    python bench/burst.py --runs 100 --processes 1 --repeat 2
    python bench/burst.py --profile 60    # py-spy record --gil the first worker for 60 s
    BURST_COUNT_SQL=1 python bench/burst.py --processes 1   # workers print SQL counts on exit

Starts its own PostgreSQL, Temporal dev server and offline model (in this process, as a model
endpoint is elsewhere in a deployment), and the worker as separate processes: the real
run_worker (default pool, concurrency and settings, as `agentrun worker` runs), one per
process, started together; with the bench's bare workflow registered beside the agent run.

For each number of processes, in the same stack and the same worker: a burst of N bare runs
(a trivial workflow calling no-op activities as many times, local and not, as an agent run
calls its activities) and a burst of N agent runs (a model turn with one tool call, the tool,
a model turn streaming 20 tokens), all started at once. Rows: runs/s (N / wall time from the
first start to the last result), and workflow-task latency p50/p99 read from the runs'
histories: WorkflowTaskStarted to WorkflowTaskCompleted (what the SDK's "Workflow task
duration exceeded" warning measures, as the server sees it) and WorkflowTaskScheduled to
Started (the queue in front of the worker).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_harness import pct  # noqa: E402
from bench_workflows import BareInput, BareWorkflow, noop  # noqa: E402
from temporalio.api.enums.v1 import EventType as HistoryEvent  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from agentrun.contracts import AgentConfig, StartRunInput  # noqa: E402
from agentrun.converter import data_converter  # noqa: E402
from agentrun.db.migrate import upgrade  # noqa: E402
from agentrun.settings import load_settings  # noqa: E402
from agentrun.stack import (  # noqa: E402
    EmbeddedPostgres,
    ensure_database,
    free_port,
    search_attribute_keys,
    temporal_cli_path,
)
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec  # noqa: E402
from agentrun.worker_processes import supervise  # noqa: E402
from workflows.agent import AgentRunWorkflow  # noqa: E402

# The agent run's activities, in order (L: local): open_run L, set_status L, model_turn,
# execute_tool, model_turn, set_status L. The bare run calls no-ops the same way.
BARE_SHAPE = BareInput(turns=[1, 0], local_before=2, local_after=1)
TARGET_RATIO = 0.8
TARGET_P99_MS = 1000.0


def worker_main() -> None:
    """One worker process: run_worker with the bench workflow, until SIGTERM."""
    from worker import run_worker

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        ready = asyncio.Event()
        task = asyncio.create_task(
            run_worker(
                load_settings(),
                stop,
                migrate=False,
                ready=ready,
                extra_workflows=[BareWorkflow],
                extra_activities=[noop],
            )
        )
        await ready.wait()
        print(json.dumps({"event": "polling"}), flush=True)
        await task

    if os.environ.get("BURST_COUNT_SQL"):
        import atexit
        import collections

        from sqlalchemy import event
        from sqlalchemy.pool import Pool

        counts: collections.Counter[str] = collections.Counter()

        @event.listens_for(Pool, "checkout")
        def _co(*a: object) -> None:
            counts["checkout"] += 1

        from sqlalchemy.engine import Engine

        @event.listens_for(Engine, "before_cursor_execute")
        def _ex(conn, cursor, stmt, *a):  # type: ignore[no-untyped-def]
            counts[" ".join(stmt.split()[:3])[:60]] += 1

        atexit.register(lambda: print(sorted(counts.items(), key=lambda x: -x[1]), file=sys.stderr))
    asyncio.run(_run())


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds so far) of every process on the machine."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return out


def _tree(table: dict[int, tuple[int, float]], root: int) -> set[int]:
    pids, grew = {root}, True
    while grew:
        more = {p for p, (pp, _) in table.items() if pp in pids} - pids
        pids |= more
        grew = bool(more)
    return pids


class CpuMeter:
    """CPU seconds spent by the worker processes, PostgreSQL, the Temporal dev server, this
    process (the client and the offline model) and the whole machine, between two reads."""

    def __init__(self, worker_pids: list[int], pg_pid: int) -> None:
        self.worker_pids, self.pg_pid = worker_pids, pg_pid

    def read(self) -> dict[str, float]:
        table = _proc_table()
        workers = set().union(*(_tree(table, p) for p in self.worker_pids))
        pg = _tree(table, self.pg_pid)
        own = _tree(table, os.getpid())
        groups = {
            "worker": workers,
            "postgres": pg,
            "temporal": own - workers - pg - {os.getpid()},
            "bench+model": {os.getpid()},
        }
        out = {k: sum(table[p][1] for p in v if p in table) for k, v in groups.items()}
        with open("/proc/stat") as f:
            cpu = [int(x) for x in f.readline().split()[1:]]
        out["machine"] = (sum(cpu) - cpu[3] - cpu[4]) / os.sysconf("SC_CLK_TCK")
        return out

    @staticmethod
    def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {k: after[k] - before[k] for k in before}


class Workers:
    """N worker processes under the supervisor `agentrun worker --processes N` uses (each a
    full worker; this bench's child command adds the bare workflow)."""

    def __init__(self, n: int, env: dict[str, str]) -> None:
        self.n, self.env = n, env
        self.stop = asyncio.Event()
        self.pids: list[int] = []

    async def __aenter__(self) -> Workers:
        ready = asyncio.Event()

        def polling(pids: list[int]) -> None:
            self.pids = pids
            ready.set()

        command = [sys.executable, __file__, "worker"]
        self.task = asyncio.create_task(
            supervise([command] * self.n, self.stop, env=self.env, on_polling=polling)
        )
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait([waiting, self.task], return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():
            waiting.cancel()
            await self.task  # raises why the workers did not start
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await self.task


async def burst_bare(client: Client, queue: str, n: int) -> tuple[float, list[str]]:
    ids = [f"bare-{n}-{i}-{uuid.uuid4().hex[:6]}" for i in range(n)]
    t0 = time.perf_counter()
    handles = await asyncio.gather(
        *(client.start_workflow(BareWorkflow.run, BARE_SHAPE, id=i, task_queue=queue) for i in ids)
    )
    await asyncio.gather(*(h.result() for h in handles))
    return time.perf_counter() - t0, ids


async def burst_agent(
    client: Client, queue: str, model: OfflineModelServer, n: int
) -> tuple[float, list[str]]:
    ids = [f"run-{n}-{i}-{uuid.uuid4().hex[:6]}" for i in range(n)]
    for i, run_id in enumerate(ids):
        model.script(
            run_id,
            [
                Reply(text="x", tool_calls=[ToolCallSpec("calculator", {"expression": "1+1"})]),
                Reply(text="".join(f"<{i:04d}{k:05d}>" for k in range(20)), chunk_chars=11),
            ],
        )
    t0 = time.perf_counter()
    handles = await asyncio.gather(
        *(
            client.start_workflow(
                AgentRunWorkflow.run,
                StartRunInput(
                    run_id=r,
                    session_id=f"s-{r}",
                    prompt=f"burst {r}",
                    config=AgentConfig(approval="skip_all", tools=["calculator"]),
                ),
                id=r,
                task_queue=queue,
            )
            for r in ids
        )
    )
    await asyncio.gather(*(h.result() for h in handles))
    return time.perf_counter() - t0, ids


async def task_latencies(
    client: Client, ids: list[str], by_ordinal: dict[int, list[float]] | None = None
) -> tuple[list[float], list[float]]:
    """(started->completed, scheduled->started) of every workflow task of these runs, in ms;
    by_ordinal, if given, gets started->completed by the task's place in its run (0: first)."""
    run_ms: list[float] = []
    queue_ms: list[float] = []
    gate = asyncio.Semaphore(20)

    async def one(wid: str) -> None:
        async with gate:
            history = await client.get_workflow_handle(wid).fetch_history()
        scheduled = started = None
        ordinal = 0
        for e in history.events:
            at = e.event_time.ToDatetime().timestamp() * 1000
            if e.event_type == HistoryEvent.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
                scheduled = at
            elif e.event_type == HistoryEvent.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                started = at
                if scheduled is not None:
                    queue_ms.append(at - scheduled)
            elif e.event_type == HistoryEvent.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                if started is not None:
                    run_ms.append(at - started)
                    if by_ordinal is not None:
                        by_ordinal.setdefault(ordinal, []).append(at - started)
                ordinal += 1
                scheduled = started = None

    await asyncio.gather(*(one(w) for w in ids))
    return run_ms, queue_ms


async def measure(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="agentrun-burst-"))
    pg = EmbeddedPostgres(tmp / "pg", free_port(), extra_options=("-c", "max_connections=400"))
    pg.start()
    try:
        url = pg.url("bench")
        ensure_database(url)
        sa_url = url.replace("postgresql://", "postgresql+psycopg://")
        upgrade(sa_url)
        assert pg.process is not None
        await _measure(args, sa_url, tmp, pg.process.pid)
    finally:
        pg.stop()


async def _measure(args: argparse.Namespace, sa_url: str, tmp: Path, pg_pid: int) -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        data_converter=data_converter(load_settings()),
        dev_server_log_level="error",
        search_attributes=search_attribute_keys(),
    )
    model = OfflineModelServer().start()
    queue = f"burst-{uuid.uuid4()}"
    worker_env = {
        **os.environ,
        "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "AGENTRUN_DATABASE_URL": sa_url,
        "OPENAI_BASE_URL": model.base_url,
        "OPENAI_API_KEY": "bench",
        "AGENTRUN_MODEL": "offline-scripted",
        "AGENTRUN_TASK_QUEUE": queue,
        "AGENTRUN_DATA_DIR": str(tmp / "data"),
        "AGENTRUN_WORKER_VERSIONING": "false",
    }
    rows: list[tuple[str, str, str, str]] = []

    def row(name: str, value: str, target: str = "", met: bool | None = None) -> None:
        verdict = "" if met is None else ("yes" if met else "NO")
        rows.append((name, value, target, verdict))
        print(f"{name:<58} {value:>14} {target:>10} {verdict:>4}", flush=True)

    import workflows

    print(f"code under test: {Path(workflows.__file__).parent.parent}")
    print(f"{'measure':<58} {'value':>14} {'target':>10} {'met':>4}")
    if hasattr(workflows, "SANDBOX_RUNNER"):
        await sandbox_rows(row)
    try:
        for procs in args.processes:
            async with Workers(procs, worker_env) as workers:
                await burst_bare(env.client, queue, 20)  # warm-up, not measured
                await burst_agent(env.client, queue, model, 20)
                spy = await _profile(args, workers.pids[0]) if args.profile else None
                meter = CpuMeter(workers.pids, pg_pid)
                for rep in range(args.repeat):
                    await _one_round(env.client, queue, model, args.runs, procs, rep, row, meter)
                if spy is not None:
                    await spy.wait()
    finally:
        model.stop()
        await env.shutdown()


async def sandbox_rows(row) -> None:  # type: ignore[no-untyped-def]
    """CPU to create one run's sandboxed workflow instance (done for every new run and every
    replay after an eviction): the SDK's default sandbox against the workers' runner."""
    import temporalio.workflow
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

    from workflows import SANDBOX_RUNNER  # type: ignore[attr-defined]

    defn = temporalio.workflow._Definition.must_from_class(AgentRunWorkflow)
    for name, runner in (
        ("default sandbox", SandboxedWorkflowRunner()),
        ("worker", SANDBOX_RUNNER),
    ):
        runner.prepare_workflow(defn)
        t0 = time.process_time()
        for _ in range(100):
            runner.prepare_workflow(defn)
        row(
            f"CPU to create a run's workflow instance ({name})",
            f"{(time.process_time() - t0) * 10:.2f} ms",
        )


async def _profile(args: argparse.Namespace, pid: int) -> asyncio.subprocess.Process:
    """py-spy on a worker process, on-GIL samples only (where its Python time goes)."""
    command = ["py-spy", "record", "--gil", "--format", "raw", "-o", args.profile_out]
    return await asyncio.create_subprocess_exec(
        *command, "--pid", str(pid), "-d", str(args.profile)
    )


async def _one_round(client, queue, model, n, procs, rep, row, meter) -> None:  # type: ignore[no-untyped-def]
    tag = f"{n} runs, {procs} process{'es' if procs > 1 else ''}" + (f" #{rep + 1}" if rep else "")
    c0 = meter.read()
    bare_wall, bare_ids = await burst_bare(client, queue, n)
    c1 = meter.read()
    agent_wall, agent_ids = await burst_agent(client, queue, model, n)
    c2 = meter.read()
    for label, wall, (a, b) in (("bare", bare_wall, (c0, c1)), ("agent", agent_wall, (c1, c2))):
        spent = CpuMeter.spent(a, b)
        row(
            f"{label} CPU s per run ({tag})",
            " ".join(f"{k} {v * 1000 / n:.0f}ms" for k, v in spent.items()),
        )
        row(f"{label} machine busy ({tag})", f"{spent['machine'] / wall * 50:.0f}% of 2 cores")
    bare_rate, agent_rate = n / bare_wall, n / agent_wall
    row(f"bare runs/s ({tag})", f"{bare_rate:.1f}")
    row(
        f"agent runs/s ({tag})",
        f"{agent_rate:.1f} ({agent_rate / bare_rate:.2f}x)",
        f">= {TARGET_RATIO}x",
        agent_rate >= TARGET_RATIO * bare_rate,
    )
    for label, ids in (("bare", bare_ids), ("agent", agent_ids)):
        by_ordinal: dict[int, list[float]] = {}
        run_ms, queue_ms = await task_latencies(client, ids, by_ordinal)
        met = pct(run_ms, 99) < TARGET_P99_MS if label == "agent" else None
        over = sum(ms > 5000 for ms in run_ms)
        row(
            f"{label} wf task latency p50/p99, over 5 s ({tag})",
            f"{pct(run_ms, 50):.0f}/{pct(run_ms, 99):.0f} ms, {over}/{len(run_ms)}",
            "p99 < 1 s" if met is not None else "",
            met,
        )
        row(
            f"{label} wf task schedule-to-start p50/p99 ({tag})",
            f"{pct(queue_ms, 50):.0f}/{pct(queue_ms, 99):.0f} ms",
        )
        row(
            f"{label} wf task p99 by task 1,2,3.. ({tag})",
            " ".join(f"{pct(v, 99):.0f}" for _, v in sorted(by_ordinal.items())),
        )


def main() -> None:
    if sys.argv[1:2] == ["worker"]:
        worker_main()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", type=int, default=0, help="py-spy seconds (worker 1)")
    parser.add_argument("--profile-out", default="/tmp/burst-profile.txt")
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
