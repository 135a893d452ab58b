"""Issue 12 item 9: `agentrun worker --processes N` runs N full workers on one machine, started
and stopped together; a child that dies is reported and the others are stopped. Driven through
the CLI as a subprocess against the session's Temporal dev server and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.testing import WorkflowEnvironment

from agentrun.contracts import RunStatus
from agentrun.settings import Settings
from agentrun.testing.offline_model import OfflineModelServer, Reply
from tests.conftest import process_running, start_input
from tests.test_cli import spawn
from tests.test_cli_errors import json_line, stack_env, stop
from workflows.agent import AgentRunWorkflow


async def poller_pids(env: WorkflowEnvironment, settings: Settings, kind: int) -> set[int]:
    """The pids of the workers Temporal sees polling the queue (identity "pid@host")."""
    resp = await env.client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=env.client.namespace,
            task_queue=TaskQueue(name=settings.task_queue),
            task_queue_type=kind,  # type: ignore[arg-type]
        )
    )
    return {int(p.identity.split("@", 1)[0]) for p in resp.pollers if "@" in p.identity}


async def until(condition: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


def worker_env(settings: Settings, tmp_path: Path, model: OfflineModelServer) -> dict[str, str]:
    return stack_env(
        settings,
        tmp_path,
        OPENAI_BASE_URL=model.base_url,
        OPENAI_API_KEY="test-key",
        AGENTRUN_MODEL="offline-scripted",
    )


async def test_two_processes_poll_take_runs_and_stop_together_on_sigterm(
    settings: Settings,
    temporal_env: WorkflowEnvironment,
    model_server: OfflineModelServer,
    tmp_path: Path,
    run_id: str,
) -> None:
    proc = await spawn(
        worker_env(settings, tmp_path, model_server), "worker", "--processes", "2", "--json"
    )
    polling = await json_line(proc)
    pids = polling["pids"]
    assert polling["event"] == "polling" and polling["processes"] == 2
    assert polling["task_queue"] == settings.task_queue and len(set(pids)) == 2
    assert proc.pid not in pids and all(process_running(p) for p in pids)

    async def both_poll() -> bool:
        for kind in (
            TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        ):
            if not set(pids) <= await poller_pids(temporal_env, settings, kind):
                return False
        return True

    # Temporal lists a poller once one of its long polls (up to a minute each) reaches the
    # queue's root partition: a process whose first polls sat on other partitions shows up
    # only after they return. The bound is one long-poll period and some.
    await until(both_poll, timeout=75)
    model_server.script(run_id, [Reply(text="Served by one of two workers.")])
    result = await temporal_env.client.execute_workflow(
        AgentRunWorkflow.run,
        start_input(run_id, f"hello {run_id}", tools=[]),
        id=run_id,
        task_queue=settings.task_queue,
    )
    assert result.status == RunStatus.DONE

    done = await stop(proc, signal.SIGTERM)
    assert done.code == 0, done.err
    assert done.json_lines() == [{"event": "stopped", "task_queue": settings.task_queue}]
    assert not any(process_running(p) for p in pids)


async def test_a_child_that_dies_is_reported_and_the_others_are_stopped(
    settings: Settings, tmp_path: Path
) -> None:
    # No model configured: the parent serves the offline model its children call.
    proc = await spawn(stack_env(settings, tmp_path), "worker", "--processes", "2", "--json")
    polling = await json_line(proc)
    pids = polling["pids"]
    assert polling["model_endpoint"].startswith("http://127.0.0.1:")
    os.kill(pids[0], signal.SIGKILL)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 1
    assert f"worker process 1 (pid {pids[0]}) exited with code -9; stopping the others" in (
        err.decode()
    )
    assert not any(process_running(p) for p in pids)
    assert b"stopped" not in out


async def test_processes_must_be_a_positive_count(settings: Settings, tmp_path: Path) -> None:
    proc = await spawn(stack_env(settings, tmp_path), "worker", "--processes", "0")
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2 and "--processes: between 1 and 64, got 0" in err.decode()
