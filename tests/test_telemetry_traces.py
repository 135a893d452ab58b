"""Issue 14 item 1: a run is one trace, from the call (or HTTP request) that started it through
the workflow to every activity, with GenAI spans of its model and tool calls; no prompt or
completion text on spans unless AGENTRUN_OTEL_CAPTURE_CONTENT is on; never the API key.

An in-memory span exporter behind the same provider agentrun makes from OTEL_*; the real
Temporal dev server, PostgreSQL and the offline model (its HTTP errors too)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from temporalio.client import Client

from agentrun.api.server import build_server, wait_started
from agentrun.client import connect, start_run
from agentrun.protocol.statuses import RunStatus
from agentrun.settings import Settings
from agentrun.stack import free_port
from agentrun.store import Repository
from agentrun.telemetry import tracing
from agentrun.testing.offline_model import Fault, OfflineModelServer, Reply, ToolCallSpec
from tests.http_support import BOUND, bearer
from worker import build_worker

pytest_plugins = ["tests.http_fixtures"]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_provider(None)
        tracing.set_capture_content(False)


@pytest.fixture
async def traced(spans: InMemorySpanExporter, settings: Settings) -> AsyncIterator[Client]:
    """A client connected as the CLI connects (agentrun.client.connect), tracing on."""
    client = await connect(settings)
    yield client


def _script(server: OfflineModelServer, prompt: str, *steps: Any) -> None:
    server.script(prompt, list(steps))


def _calc_then_answer(call_id: str) -> list[Any]:
    return [
        Reply(
            text="Let me compute.",
            tool_calls=[ToolCallSpec("calculator", {"expression": "6*7"}, id=call_id)],
        ),
        Reply(text="The answer is 42."),
    ]


async def _run(client: Client, settings: Settings, repo: Repository, prompt: str) -> str:
    run_id = f"run-{uuid.uuid4()}"
    worker = build_worker(client, settings, repo, graceful_shutdown=timedelta(seconds=1))
    async with worker:
        handle = await start_run(
            client, settings.task_queue, prompt, run_id=run_id, config={"tools": ["calculator"]}
        )
        result = await handle.result()
    assert result.status == RunStatus.DONE, result
    return run_id


def _of_run(exporter: InMemorySpanExporter, run_id: str) -> list[ReadableSpan]:
    """The spans of the trace that holds the run's workflow spans."""
    finished = exporter.get_finished_spans()
    roots = [
        s
        for s in finished
        if s.name.startswith("RunWorkflow:")
        and (s.attributes or {}).get("temporalWorkflowID") == run_id
    ]
    assert roots, [s.name for s in finished]
    trace_id = roots[0].context.trace_id
    return [s for s in finished if s.context.trace_id == trace_id]


def _named(spans: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def _parent_of(span: ReadableSpan, spans: list[ReadableSpan]) -> ReadableSpan:
    assert span.parent is not None, span.name
    (parent,) = [s for s in spans if s.context.span_id == span.parent.span_id]
    return parent


def _all_text(spans: list[ReadableSpan]) -> str:
    parts = []
    for s in spans:
        parts.append(s.name)
        parts.extend(f"{k}={v}" for k, v in (s.attributes or {}).items())
        for e in s.events:
            parts.extend(f"{k}={v}" for k, v in (e.attributes or {}).items())
    return "\n".join(parts)


async def test_a_run_is_one_trace_with_genai_spans_and_no_text(
    spans: InMemorySpanExporter,
    traced: Client,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    prompt = f"trace me {uuid.uuid4().hex}"
    call_id = f"call_{uuid.uuid4().hex[:8]}"
    _script(model_server, prompt, *_calc_then_answer(call_id))
    run_id = await _run(traced, settings, repo, prompt)
    trace = _of_run(spans, run_id)

    (start,) = _named(trace, "StartWorkflow:agentrun.AgentRun")
    assert start.parent is None  # the client's start is the root: one trace from the start call
    # Every span this test's run made is in that one trace (the exporter is this test's own).
    assert len(trace) == len(spans.get_finished_spans())
    model_activities = _named(trace, "RunActivity:agentrun.model_turn")
    chats = sorted(_named(trace, "chat "), key=lambda s: s.start_time or 0)
    assert len(model_activities) == 2 and len(chats) == 2
    for chat in chats:
        assert chat.name == "chat offline-scripted" and chat.kind == SpanKind.CLIENT
        assert _parent_of(chat, trace).name == "RunActivity:agentrun.model_turn"
        a = chat.attributes or {}
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.request.model"] == "offline-scripted"
        assert a["gen_ai.response.model"] == "offline-scripted"
        assert a["gen_ai.provider.name"] == "openai"
        assert a["server.address"] == "127.0.0.1"
        assert a["server.port"] == int(model_server.base_url.split(":")[2].split("/")[0])
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert a["gen_ai.response.time_to_first_chunk"] >= 0
        assert chat.status.status_code != StatusCode.ERROR
    assert chats[0].attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert chats[1].attributes["gen_ai.response.finish_reasons"] == ("stop",)
    # The recorded usage is what the spans say.
    calls = await repo.model_attempts(run_id, 1) + await repo.model_attempts(run_id, 2)
    assert [c.prompt_tokens for c in calls] == [
        c.attributes["gen_ai.usage.input_tokens"] for c in chats
    ]

    (tool,) = _named(trace, "execute_tool ")
    assert tool.name == "execute_tool calculator"
    assert _parent_of(tool, trace).name == "RunActivity:agentrun.execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "calculator"
    assert tool.attributes["gen_ai.tool.call.id"] == call_id
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    # Each activity span hangs off the workflow, the workflow off the start.
    for activity_span in _named(trace, "RunActivity:"):
        assert _parent_of(activity_span, trace).name.startswith("StartActivity:")
    text = _all_text(trace)
    for secret in (prompt, "The answer is 42", "Let me compute", "6*7", "test-key"):
        assert secret not in text, secret


async def test_content_capture_puts_the_text_on_spans_but_never_the_key(
    spans: InMemorySpanExporter,
    traced: Client,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    prompt = f"capture me {uuid.uuid4().hex}"
    _script(model_server, prompt, *_calc_then_answer("call_capture"))
    captured = settings.model_copy(update={"otel_capture_content": True})
    run_id = await _run(traced, captured, repo, prompt)
    trace = _of_run(spans, run_id)
    chats = sorted(_named(trace, "chat "), key=lambda s: s.start_time or 0)
    assert prompt in chats[0].attributes["gen_ai.input.messages"]
    assert "Let me compute." in chats[0].attributes["gen_ai.output.messages"]
    assert "The answer is 42." in chats[1].attributes["gen_ai.output.messages"]
    (tool,) = _named(trace, "execute_tool ")
    assert "6*7" in tool.attributes["gen_ai.tool.call.arguments"]
    assert tool.attributes["gen_ai.tool.call.result"] == "42"
    assert "test-key" not in _all_text(trace)


async def test_a_failed_model_attempt_is_an_error_span_with_its_kind(
    spans: InMemorySpanExporter,
    traced: Client,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    prompt = f"flaky {uuid.uuid4().hex}"
    _script(
        model_server,
        prompt,
        Fault(status=429, retry_after_s=0.1),
        Fault(status=503, retry_after_s=0.1),
        Fault(kind="malformed", after_chunks=1),
        Reply(text="Fine now."),
    )
    run_id = await _run(traced, settings, repo, prompt)
    chats = sorted(_named(_of_run(spans, run_id), "chat "), key=lambda s: s.start_time or 0)
    assert [c.attributes.get("error.type") for c in chats] == ["429", "503", "malformed", None]
    assert [c.status.status_code for c in chats[:3]] == [StatusCode.ERROR] * 3
    assert [c.attributes["agentrun.attempt"] for c in chats] == [1, 2, 3, 4]


async def test_a_run_started_over_http_is_one_trace_from_the_request(
    spans: InMemorySpanExporter,
    traced: Client,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    prompt = f"over http {uuid.uuid4().hex}"
    _script(model_server, prompt, Reply(text="Hello over HTTP."))
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    _, key = await repo.create_api_key(tenant, "app", ["read", "write"])
    port = free_port()
    server = build_server(
        settings.model_copy(update={"http_port": port}), repo=repo, client=traced, host="127.0.0.1"
    )
    import asyncio

    task = asyncio.create_task(server.serve())
    await wait_started(server, task, timeout=BOUND)
    worker = build_worker(traced, settings, repo, graceful_shutdown=timedelta(seconds=1))
    try:
        async with worker, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            r = await http.post("/v1/runs", json={"prompt": prompt}, headers=bearer(key))
            assert r.status_code == 201, r.text
            run_id = r.json()["run_id"]
            from agentrun.client import RunHandle

            assert (await RunHandle(traced, run_id).result()).status == RunStatus.DONE
    finally:
        server.should_exit = True
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), BOUND)
    trace = _of_run(spans, run_id)
    (request,) = [s for s in trace if s.parent is None]
    assert request.kind == SpanKind.SERVER and "/v1/runs" in request.name
    (start,) = _named(trace, "StartWorkflow:agentrun.AgentRun")
    assert (
        _parent_of(start, trace) is request
        or _parent_of(_parent_of(start, trace), trace) is request
    )
    assert _named(trace, "chat offline-scripted")


async def test_every_history_replays_with_tracing_on(spans: InMemorySpanExporter) -> None:
    """A fleet that turns tracing on (or off: tests/test_replay.py replays the traced
    histories of tests/histories/v6-obs without it) keeps its runs in flight replaying."""
    from temporalio.client import WorkflowHistory
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.worker import Replayer

    from tests.test_replay import HISTORIES
    from workflows import ALL_WORKFLOWS, SANDBOX_RUNNER, WEBHOOK_WORKFLOWS

    assert any(p.parent.name == "v6-obs" for p in HISTORIES)
    replayer = Replayer(
        workflows=[*ALL_WORKFLOWS, *WEBHOOK_WORKFLOWS],
        data_converter=pydantic_data_converter,
        workflow_runner=SANDBOX_RUNNER,
        interceptors=tracing.client_interceptors(),
    )
    for path in HISTORIES:
        await replayer.replay_workflow(WorkflowHistory.from_json(path.stem, path.read_text()))
    # Replaying makes no spans (the interceptor skips them while replaying).
    assert not spans.get_finished_spans()


async def test_the_cli_starts_the_trace_its_worker_continues(
    spans: InMemorySpanExporter,
    traced: Client,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    """`agentrun run` in its own process, tracing from OTEL_* (console exporter): its start span
    is flushed before the CLI leaves (os._exit), and the worker's spans are in its trace."""
    import re

    from tests.test_cli import agentrun, cli_env

    run_id = f"run-{uuid.uuid4()}"
    prompt = f"cli trace {run_id}"
    model_server.script(prompt, [Reply(text="Traced from the CLI.")])
    env = cli_env(settings, OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="cli-under-test")
    async with build_worker(traced, settings, repo, graceful_shutdown=timedelta(seconds=1)):
        done = await agentrun(env, "run", prompt, "--run-id", run_id, "--tools", "", "--json")
    assert done.code == 0, done.err
    found = re.search(
        r'"name": "StartWorkflow:agentrun\.AgentRun",\s*"context": \{\s*'
        r'"trace_id": "0x([0-9a-f]+)"',
        done.out,
    )
    assert found, done.out[-2000:]
    assert '"service.name": "cli-under-test"' in done.out
    trace = _of_run(spans, run_id)
    assert format(trace[0].context.trace_id, "032x") == found.group(1)
    assert _named(trace, "chat offline-scripted")
