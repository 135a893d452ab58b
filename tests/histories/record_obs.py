"""Record histories of traced runs (issue 14: the TracingInterceptor on the client and worker,
so every start and activity carries a `_tracer-data` header) into tests/histories/<label>/.

    python -m tests.histories.record_obs v6-obs

The scenarios are record.py's; only the client differs (connected with tracing on, as
agentrun.client.connect makes it when OTEL_* is set). tests/test_replay.py replays them without
the interceptor (a fleet that turns tracing off) and tests/test_telemetry_traces.py replays every
history with it (a fleet that turns it on)."""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from agentrun.db.migrate import upgrade
from agentrun.settings import load_settings
from agentrun.stack import (
    EmbeddedPostgres,
    ensure_database,
    free_port,
    search_attribute_keys,
    temporal_cli_path,
)
from agentrun.store import Repository
from agentrun.telemetry import tracing
from agentrun.testing.offline_model import OfflineModelServer
from tests.histories.record import HERE, model_retry, tools, waiting_approval
from worker import build_worker

SCENARIOS = {"traced_tools": tools, "traced_model_retry": model_retry}


async def record(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="agentrun-record-"))
    pg = EmbeddedPostgres(tmp / "pg" / "data", free_port(), extra_options=("-c", "fsync=off"))
    pg.start()
    model = OfflineModelServer().start()
    tracing.use_provider(TracerProvider())
    try:
        url = pg.url("agentrun_record")
        ensure_database(url)
        sa_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
        upgrade(sa_url)
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_cli_path(),
            data_converter=pydantic_data_converter,
            search_attributes=search_attribute_keys(),
            dev_server_log_level="error",
        )
        client = await Client.connect(
            env.client.service_client.config.target_host,
            data_converter=pydantic_data_converter,
            interceptors=tracing.client_interceptors(),
        )
        repo = Repository.connect(sa_url)
        tq = f"record-{uuid.uuid4().hex[:8]}"
        settings = load_settings(
            temporal_address=env.client.service_client.config.target_host,
            database_url=sa_url,
            openai_base_url=model.base_url,
            openai_api_key="record-key",
            model="offline-scripted",
            task_queue=tq,
            data_dir=tmp / "data",
            worker_versioning=False,
        )
        try:
            async with build_worker(client, settings, repo, graceful_shutdown=timedelta(seconds=1)):
                for name, scenario in {**SCENARIOS, "traced_waiting": waiting_approval}.items():
                    rid = f"rec-{name}-{uuid.uuid4().hex[:8]}"
                    handle = await asyncio.wait_for(scenario(client, tq, model, rid), 120)
                    history = await handle.fetch_history()
                    assert "_tracer-data" in history.to_json(), "the run was not traced"
                    (out / f"{name}.json").write_text(history.to_json())
                    print(f"recorded {name}: {len(history.events)} events")
                    if name == "traced_waiting":
                        await handle.terminate("recorded")
        finally:
            await repo.close()
            await env.shutdown()
    finally:
        tracing.use_provider(None)
        model.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m tests.histories.record_obs <label>")
    asyncio.run(record(HERE / args[0]))


if __name__ == "__main__":
    main()
