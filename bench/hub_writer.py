"""The writer of bench/hub_latency.py: a process of its own, standing in for the worker, that
appends one message.delta a run every 1/rate s (its text: the time it was sent), then ends the
runs; and the commit times of what it wrote, by PostgreSQL's clock.

    python bench/hub_writer.py LIBPQ_URL RUNS_JSON RATE SECONDS OUT_JSON
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect  # noqa: E402

from agentrun.db.models import RunStatus  # noqa: E402
from agentrun.protocol.events import EventType, MessageDeltaData  # noqa: E402
from agentrun.protocol.names import NOTIFY_CHANNEL  # noqa: E402
from agentrun.store import Repository, events  # noqa: E402

FILLER = " <tok>" * 4  # a delta of a few tokens
WRITER_CONNECTIONS = 32


async def writer(libpq_url: str, runs_file: str, rate: float, seconds: float, out: str) -> None:
    """One delta a run every 1/rate s with the store's own one-statement append (its SQL, on
    plain psycopg connections: the load generator must not be what limits the rate), then
    the run ends (set_run_status, as the worker does)."""
    run_ids = json.loads(Path(runs_file).read_text())
    sql = str(events._STREAM_APPEND.compile(dialect=psycopg_dialect()))
    conns = [
        await psycopg.AsyncConnection.connect(
            libpq_url, autocommit=True, application_name="bench-writer"
        )
        for _ in range(min(WRITER_CONNECTIONS, len(run_ids)))
    ]
    lags: list[float] = []
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2

    async def stream(run_ids: list[str], conn: psycopg.AsyncConnection[Any]) -> None:
        due = {r: start + random.random() / rate for r in run_ids}
        left = {r: int(seconds * rate) for r in run_ids}
        while left:
            run_id = min(left, key=due.__getitem__)
            await asyncio.sleep(max(0.0, due[run_id] - loop.time()))
            lags.append(loop.time() - due[run_id])
            text = f"{time.time():.6f}{FILLER}"
            data = json.dumps(MessageDeltaData(turn=1, attempt=1, text=text).model_dump())
            params = {"run_id": run_id, "type": EventType.MESSAGE_DELTA.value, "data": data}
            await conn.execute(sql, {**params, "channel": NOTIFY_CHANNEL})
            due[run_id] += 1 / rate
            left[run_id] -= 1
            if not left[run_id]:
                del left[run_id]

    try:
        n = len(conns)
        await asyncio.gather(*(stream(run_ids[k::n], c) for k, c in enumerate(conns)))
    finally:
        for c in conns:
            await c.close()
    repo = Repository.connect(libpq_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        for run_id in run_ids:
            await repo.set_run_status(run_id, RunStatus.DONE)
    finally:
        await repo.close()
    lags.sort()
    Path(out).write_text(json.dumps({"lag_p99": lags[int(len(lags) * 0.99)]}))


async def commit_times(libpq_url: str, runs: list[str]) -> dict[str, dict[int, float]]:
    """When each event was committed, by PostgreSQL's clock (track_commit_timestamp)."""
    out: dict[str, dict[int, float]] = {r: {} for r in runs}
    async with await psycopg.AsyncConnection.connect(libpq_url) as conn:
        cur = await conn.execute(
            "SELECT run_id, seq, extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8"
            " FROM run_events WHERE run_id = ANY(%s)",
            [runs],
        )
        for run_id, seq, at in await cur.fetchall():
            out[run_id][seq] = at
    return out


async def write(libpq_url: str, runs: list[str], rate: float, seconds: float, tmp: Path) -> dict:
    runs_file, out = tmp / f"runs-{uuid.uuid4().hex}.json", tmp / f"out-{uuid.uuid4().hex}.json"
    runs_file.write_text(json.dumps(runs))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        libpq_url,
        str(runs_file),
        str(rate),
        str(seconds),
        str(out),
    )
    if await proc.wait() != 0:
        raise RuntimeError("the writer failed")
    return json.loads(out.read_text())


if __name__ == "__main__":
    url, runs_file, rate, seconds, out = sys.argv[1:6]
    asyncio.run(writer(url, runs_file, float(rate), float(seconds), out))
