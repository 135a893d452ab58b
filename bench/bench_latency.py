"""Stream latency: from the model server's send of a chunk to a follower of the event log
seeing it, beside Temporal Workflow Streams carrying the same tokens; and throughput, with the
stream p99 under 10, 50 and 200 concurrent runs."""

from __future__ import annotations

import asyncio
import time
import uuid

from bench_harness import Bench, Listener, pct, send_times, token
from bench_workflows import StreamInput, StreamsWorkflow
from temporalio.contrib.workflow_streams import WorkflowStreamClient

from agentrun.protocol.events import EventType
from agentrun.testing.offline_model import Reply, ToolCallSpec


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
        deltas = [(t, e) for t, _, e in listener.seen if e.type == EventType.MESSAGE_DELTA]
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
        await _workflow_streams_latency(b, rate, tokens, run_no + 10)


async def _workflow_streams_latency(b: Bench, rate: float, tokens: int, run_no: int) -> None:
    """The same tokens through Temporal Workflow Streams, for comparison."""
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
    b.row(f"Workflow Streams latency p50 @ {rate:g} tok/s", f"{pct(wlat, 50):.1f} ms", "(compare)")
    b.row(f"Workflow Streams latency p99 @ {rate:g} tok/s", f"{pct(wlat, 99):.1f} ms", "(compare)")


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
