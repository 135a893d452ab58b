"""Safe upgrades on the real dev server: runs are pinned to the worker build they started on
(Worker Versioning), and an older worker reads payloads from a newer client."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from agentrun.contracts import RunResult
from agentrun.deployment import deployment_version, make_version_current
from agentrun.protocol.events import EventType
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply
from starter.api import decide
from tests.conftest import bash_call, next_event, start_input
from worker import build_worker, run_worker
from workflows.agent import AgentRunWorkflow

BOUND = 90  # seconds; every wait below is bounded by it


async def task_build_ids(client: Client, run_id: str) -> set[str]:
    """The build ids of the workers that completed the run's workflow tasks."""
    history = await client.get_workflow_handle(run_id).fetch_history()
    return {
        e.workflow_task_completed_event_attributes.deployment_version.build_id
        for e in history.events
        if e.event_type == HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    }


async def pinned_build_id(client: Client, run_id: str) -> str:
    desc = await client.get_workflow_handle(run_id).describe()
    info = desc.raw_description.workflow_execution_info.versioning_info
    return info.deployment_version.build_id


def versioned(settings: Settings, deployment: str, build_id: str) -> Settings:
    return settings.model_copy(
        update={"worker_versioning": True, "deployment_name": deployment, "build_id": build_id}
    )


async def test_a_waiting_run_finishes_on_its_build_and_new_runs_go_to_the_current_one(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    client = temporal_env.client
    deployment = f"agentrun-test-{uuid.uuid4().hex[:8]}"
    a = versioned(settings, deployment, "build-a")
    b = versioned(settings, deployment, "build-b")
    prompt = f"run on A {run_id}"
    model_server.script(prompt, [bash_call("echo on-a"), Reply(text="Finished on A.")])
    later_id = f"{run_id}-later"
    later_prompt = f"run on B {later_id}"
    model_server.script(later_prompt, [Reply(text="Answered by B.")])

    async with build_worker(client, a, repo, graceful_shutdown=timedelta(seconds=1)):
        await make_version_current(client, deployment_version(a), timeout=BOUND)
        handle = await client.start_workflow(
            AgentRunWorkflow.run,
            start_input(run_id, prompt, workspace=str(tmp_path)),
            id=run_id,
            task_queue=settings.task_queue,
        )
        requested = await next_event(repo, run_id, EventType.TOOL_APPROVAL_REQUESTED, timeout=BOUND)
        assert await pinned_build_id(client, run_id) == "build-a"

        async with build_worker(client, b, repo, graceful_shutdown=timedelta(seconds=1)):
            assert await make_version_current(client, deployment_version(b), timeout=BOUND)
            await decide(
                client,
                run_id,
                "call_bash",
                "approve",
                arguments_sha256=requested.data["arguments_sha256"],
            )
            result = await asyncio.wait_for(handle.result(), BOUND)
            assert result.status == "DONE" and result.final_text == "Finished on A."
            assert await task_build_ids(client, run_id) == {"build-a"}
            assert await pinned_build_id(client, run_id) == "build-a"
            call = await repo.get_tool_call(run_id, "call_bash")
            assert "on-a" in (call.result or "")

            later: RunResult = await asyncio.wait_for(
                client.execute_workflow(
                    AgentRunWorkflow.run,
                    start_input(later_id, later_prompt),
                    id=later_id,
                    task_queue=settings.task_queue,
                ),
                BOUND,
            )
            assert later.final_text == "Answered by B."
            assert await task_build_ids(client, later_id) == {"build-b"}
            assert await pinned_build_id(client, later_id) == "build-b"


async def test_the_embedded_default_worker_makes_its_version_current_by_itself(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    # What `agentrun dev` / `agentrun worker` do against a local server: no extra step.
    s = settings.model_copy(
        update={
            "worker_versioning": True,
            "deployment_name": f"agentrun-dev-{uuid.uuid4().hex[:8]}",
            "build_id": None,
            "set_current_version": "auto",
        }
    )
    prompt = f"hello {run_id}"
    model_server.script(prompt, [Reply(text="Hello from the default worker.")])
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_worker(s, stop, migrate=False, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), BOUND)
        result = await asyncio.wait_for(
            temporal_env.client.execute_workflow(
                AgentRunWorkflow.run,
                start_input(run_id, prompt),
                id=run_id,
                task_queue=s.task_queue,
            ),
            BOUND,
        )
        assert result.status == "DONE"
        assert await pinned_build_id(temporal_env.client, run_id) == (
            deployment_version(s).build_id
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, BOUND)


async def test_an_older_worker_reads_payloads_from_a_newer_client(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    client = temporal_env.client
    prompt = f"newer client {run_id}"
    model_server.script(prompt, [bash_call("echo newer"), Reply(text="Read it all.")])
    raw_start = {
        "run_id": run_id,
        "session_id": f"s-{uuid.uuid4()}",
        "prompt": prompt,
        "priority_hint": "high",
        "config": {"workspace": str(tmp_path), "reasoning_effort": "high"},
    }
    async with build_worker(client, settings, repo, graceful_shutdown=timedelta(seconds=1)):
        handle = await client.start_workflow(
            "agentrun.AgentRun", raw_start, id=run_id, task_queue=settings.task_queue
        )
        requested = await next_event(repo, run_id, EventType.TOOL_APPROVAL_REQUESTED, timeout=BOUND)
        answer = await handle.execute_update(
            "decide_tool_call",
            {
                "tool_call_id": "call_bash",
                "decision": "approve",
                "arguments_sha256": requested.data["arguments_sha256"],
                "decided_by": "newer-client",
                "confidence": 0.97,
            },
        )
        assert answer["decision"] == "approve"
        result = await asyncio.wait_for(handle.result(), BOUND)
        assert json.loads(json.dumps(result))["status"] == "DONE"


async def test_on_a_shared_cluster_only_the_first_build_promotes_itself(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import agentrun.deployment as deployment_module
    from agentrun.deployment import current_build_id, promote_on_start

    monkeypatch.setattr(deployment_module, "is_local", lambda host: False)
    client = temporal_env.client
    deployment = f"agentrun-shared-{uuid.uuid4().hex[:8]}"
    a = versioned(settings, deployment, "build-a")
    b = versioned(settings, deployment, "build-b")
    async with build_worker(client, a, repo, graceful_shutdown=timedelta(seconds=1)):
        await asyncio.wait_for(promote_on_start(client, a), BOUND)  # first deploy: current
        assert await current_build_id(client, deployment) == "build-a"
        async with build_worker(client, b, repo, graceful_shutdown=timedelta(seconds=1)):
            with caplog.at_level(logging.WARNING, logger="agentrun.deployment"):
                await asyncio.wait_for(promote_on_start(client, b), BOUND)
            assert await current_build_id(client, deployment) == "build-a"  # operator's call
            assert f"--deployment-name {deployment} --build-id build-b" in caplog.text
            always = b.model_copy(update={"set_current_version": "always"})
            await asyncio.wait_for(promote_on_start(client, always), BOUND)
            assert await current_build_id(client, deployment) == "build-b"
