"""The benchmarks' harness: a Bench (the stack's client, settings, store and offline model, and
the result rows), a Listener that follows many runs' event logs as `agentrun follow` does, and
the token helpers the latency measures use."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from agentrun.contracts import AgentConfig, StartRunInput
from agentrun.protocol.events import EventType
from agentrun.protocol.names import NOTIFY_CHANNEL
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer
from workflows.agent import AgentRunWorkflow

TOKEN = re.compile(r"<(\d{9})>")


def token(run: int, i: int) -> str:
    return f"<{run:04d}{i:05d}>"  # 11 characters, unique across runs


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


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
            if event.type != EventType.MESSAGE_DELTA:
                continue
            for tok in TOKEN.findall(event.data["text"]):
                sent = sends.get(f"<{tok}>")
                if sent is not None:
                    out.append((seen_at - sent) * 1000)
        return out


def send_times(model: OfflineModelServer) -> dict[str, float]:
    assert model.sends is not None
    return {text: at for at, text in model.sends}


RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(section: str, begin: str, end: str) -> Path:
    """Put one bench's section (from its `begin` marker to its `end` marker) into
    bench/RESULTS.md in place of its last one, or at the end the first time; every other
    bench's section stays as it is."""
    old = RESULTS.read_text() if RESULTS.exists() else "# agentrun benchmark results\n"
    if begin in old and end in old.split(begin, 1)[1]:
        head, rest = old.split(begin, 1)
        new = head + section + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(new)
    print(f"wrote {RESULTS}")
    return RESULTS
