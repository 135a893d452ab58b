"""Workflows and activities used only by bench/run.py (a module of their own, because the
workflow sandbox re-imports the module a workflow is defined in)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.contrib.workflow_streams import WorkflowStream, WorkflowStreamClient

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel


# -- Workflow Streams comparison ----------------------------------------------------------------


class StreamInput(BaseModel):
    base_url: str
    prompt: str
    batch_ms: int = 50


@activity.defn(name="bench.stream_tokens")
async def stream_tokens(inp: StreamInput) -> int:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=inp.base_url, api_key="bench", max_retries=0)
    stream_client = WorkflowStreamClient.from_within_activity(
        batch_interval=timedelta(milliseconds=inp.batch_ms)
    )
    topic = stream_client.topic("tokens", type=str)
    count = 0
    async with stream_client:
        stream = await client.chat.completions.create(
            model="bench", messages=[{"role": "user", "content": inp.prompt}], stream=True
        )
        async for chunk in stream:
            activity.heartbeat()
            for choice in chunk.choices:
                if choice.delta and choice.delta.content:
                    topic.publish(choice.delta.content)
                    count += 1
    return count


@workflow.defn(name="bench.StreamsWorkflow")
class StreamsWorkflow:
    @workflow.init
    def __init__(self, inp: StreamInput) -> None:
        self.stream = WorkflowStream()

    @workflow.run
    async def run(self, inp: StreamInput) -> int:
        return await workflow.execute_activity(
            stream_tokens,
            inp,
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(seconds=30),
        )


# -- bare workflow of the agent run's shape -----------------------------------------------------


class BareInput(BaseModel):
    turns: list[int]  # tool calls after each model turn
    # No-op local activities before the first turn and after the last, as the agent run's
    # bookkeeping (open, status) runs.
    local_before: int = 0
    local_after: int = 0


@activity.defn(name="bench.noop")
async def noop(n: int) -> int:
    return n


@workflow.defn(name="bench.Bare")
class BareWorkflow:
    @workflow.run
    async def run(self, inp: BareInput) -> int:
        done = 0
        opts: dict[str, Any] = {
            "start_to_close_timeout": timedelta(seconds=30),
            "retry_policy": RetryPolicy(maximum_attempts=3),
        }
        for i in range(inp.local_before):
            await workflow.execute_local_activity(noop, i, **opts)
        for tools in inp.turns:
            await workflow.execute_activity(noop, done, **opts)
            done += 1
            await asyncio.gather(
                *(workflow.execute_activity(noop, i, **opts) for i in range(tools))
            )
            done += tools
        for i in range(inp.local_after):
            await workflow.execute_local_activity(noop, i, **opts)
        return done
