"""Spans and metrics of a model call and a tool call, following the OpenTelemetry GenAI semantic
conventions (gen_ai.* attributes; span names `chat {model}` and `execute_tool {tool}`).

The activities call these in a few lines; what a span carries is decided here:
- never the API key (it is in no argument);
- prompt and completion text only with AGENTRUN_OTEL_CAPTURE_CONTENT=true (sensitive: the
  conversation then reaches the trace backend), as gen_ai.input.messages /
  gen_ai.output.messages, and tool arguments/results as gen_ai.tool.call.arguments/result;
- errors as error.type: the HTTP status ("429", "500"...), "timeout", "connection",
  "malformed", "cancelled", "db_unavailable" or the exception's class."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from temporalio.exceptions import ApplicationError

from agentrun.telemetry import metrics, tracing

__all__ = ["ModelCall", "ToolCallTelemetry", "error_kind", "model_call", "tool_call", "tool_label"]

log = logging.getLogger("agentrun.telemetry")
PROVIDER = "openai"  # the wire protocol every endpoint agentrun calls speaks
_KINDS = {
    "ModelTimeout": "timeout",
    "ModelConnection": "connection",
    "ModelStream": "malformed",
    "ModelError": "other",
    "DatabaseUnavailable": "db_unavailable",
    "DatabaseUnavailableError": "db_unavailable",
    "DatabaseRefused": "db_refused",
}


def error_kind(exc: BaseException) -> str:
    """A bounded name for what failed (a label and error.type)."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, ApplicationError) and exc.type:
        if exc.type.startswith("ModelHTTP"):
            return exc.type.removeprefix("ModelHTTP")
        return _KINDS.get(exc.type, exc.type)
    return _KINDS.get(type(exc).__name__, type(exc).__name__)


@dataclass
class ModelCall:
    """One model attempt as telemetry sees it. The activity hands it the StreamedTurn it reads
    into (`watch`); at the end the span and the metrics are filled from it. `cost_usd`: set it
    before the block ends when the call's price is known (None: not recorded)."""

    model: str
    span: Any = None
    turn: Any = None
    writer: Any = None
    cost_usd: Decimal | None = None
    started: float = field(default_factory=time.monotonic)

    def watch(self, turn: Any, writer: Any) -> None:
        self.turn, self.writer = turn, writer

    def _finish(self, exc: BaseException | None) -> None:
        try:
            self._record(exc)
        except Exception:  # telemetry never fails a model turn
            log.warning("could not record the model call's telemetry", exc_info=True)

    def _record(self, exc: BaseException | None) -> None:
        turn, usage = self.turn, getattr(self.turn, "usage", None)
        input_tokens = getattr(usage, "prompt_tokens", None)
        output_tokens = getattr(usage, "completion_tokens", None)
        first = getattr(turn, "first_token", None)
        start = getattr(turn, "started", self.started)
        ttft = first - start if first is not None else None
        kind = error_kind(exc) if exc is not None else None
        metrics.model_call(
            metrics.meter(),
            self.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            duration_s=time.monotonic() - start,
            ttft_s=ttft,
            error_kind=kind,
            cost_usd=self.cost_usd,
            commits=getattr(self.writer, "commits", 0),
        )
        span = self.span
        if span is None:
            return
        attrs: dict[str, Any] = {
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            "gen_ai.response.id": getattr(turn, "response_id", None),
            "gen_ai.response.model": getattr(turn, "response_model", None) or None,
            "gen_ai.response.time_to_first_chunk": ttft,
        }
        reason = getattr(turn, "finish_reason", None)
        if reason:
            attrs["gen_ai.response.finish_reasons"] = [reason]
        if self.cost_usd is not None:
            attrs["agentrun.cost_usd"] = str(self.cost_usd)
        if tracing.capture_content() and turn is not None:
            attrs["gen_ai.output.messages"] = _json(_output_message(turn))
        span.set_attributes({k: v for k, v in attrs.items() if v is not None})
        if kind is not None:
            _record_error(span, kind, exc)


@contextmanager
def model_call(
    model: str, endpoint: str | None, messages: list[dict[str, Any]], attempt: int
) -> Iterator[ModelCall]:
    """The block of one streamed model attempt: a `chat {model}` CLIENT span (when tracing is
    on) and, at its end, the attempt's metrics."""
    call = ModelCall(model)
    with _chat_span(model, endpoint, messages, attempt) as span:
        call.span = span
        try:
            yield call
        except BaseException as exc:
            call._finish(exc)
            raise
        call._finish(None)


def _chat_span(
    model: str, endpoint: str | None, messages: list[dict[str, Any]], attempt: int
) -> AbstractContextManager[Any]:
    """The attempt's `chat {model}` CLIENT span; no span (None) when tracing is off."""
    tracer = tracing.tracer()
    if tracer is None:
        return nullcontext(None)
    from opentelemetry.trace import SpanKind

    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.system": PROVIDER,
        "gen_ai.request.model": model,
        "gen_ai.request.stream": True,
        "agentrun.attempt": attempt,
        **_server(endpoint),
    }
    if tracing.capture_content():
        attrs["gen_ai.input.messages"] = _json(messages)
    return tracer.start_as_current_span(
        f"chat {model}",
        kind=SpanKind.CLIENT,
        attributes=attrs,
        record_exception=False,
        set_status_on_exception=False,
    )


@dataclass
class ToolCallTelemetry:
    tool: str
    span: Any = None
    outcome: str | None = None

    def done(self, result: str, is_error: bool) -> None:
        self.outcome = "error" if is_error else "ok"
        if self.span is not None:
            if tracing.capture_content():
                self.span.set_attribute("gen_ai.tool.call.result", result)
            if is_error:
                _record_error(self.span, "tool_error", None)


@contextmanager
def tool_call(tool: str, call_id: str, arguments: str) -> Iterator[ToolCallTelemetry]:
    """The block that runs one tool call: an `execute_tool {tool}` span and its count by
    outcome (ok, error, or the failure that ended the block: retry, cancelled...). `tool` must
    be a name the worker's registry knows, or a fixed placeholder (labels stay bounded)."""
    t = ToolCallTelemetry(tool)
    tracer = tracing.tracer()
    try:
        if tracer is None:
            yield t
        else:
            attrs: dict[str, Any] = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": tool,
                "gen_ai.tool.call.id": call_id,
                "gen_ai.tool.type": "function",
            }
            if tracing.capture_content():
                attrs["gen_ai.tool.call.arguments"] = arguments
            with tracer.start_as_current_span(
                f"execute_tool {tool}",
                attributes=attrs,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                t.span = span
                try:
                    yield t
                except BaseException as exc:
                    # The tool's own message may quote what it read: only with capture on.
                    _record_error(span, _tool_kind(exc), exc, tracing.capture_content())
                    raise
    except BaseException as exc:
        metrics.tool_call(metrics.meter(), tool, _tool_kind(exc))
        raise
    metrics.tool_call(metrics.meter(), tool, t.outcome or "ok")


def tool_label(registry: Any, name: str, mcp_recorded: bool = False) -> str:
    """The tool's name as a label: only names the worker's registry knows, or an MCP tool's
    `server__tool` when the run recorded it from a server the worker declares (`mcp_recorded`,
    see McpTools.known): a model may invent any name; labels must stay bounded."""
    return name if mcp_recorded or registry.get(name) is not None else "other"


def _tool_kind(exc: BaseException) -> str:
    if isinstance(exc, ApplicationError) and exc.type == "ToolRetry":
        return "retry"
    return error_kind(exc)


def _record_error(span: Any, kind: str, exc: BaseException | None, message: bool = True) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, kind))
    if exc is not None and not isinstance(exc, asyncio.CancelledError):
        # The class, and the message where it is the endpoint's error text (never a request).
        attrs = {"exception.type": type(exc).__name__}
        if message:
            attrs["exception.message"] = str(exc)[:1000]
        span.add_event("exception", attrs)


def _server(endpoint: str | None) -> dict[str, Any]:
    if not endpoint:
        return {}
    parts = urlsplit(endpoint)
    out: dict[str, Any] = {}
    if parts.hostname:
        out["server.address"] = parts.hostname
        out["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
    return out


def _output_message(turn: Any) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if turn.text:
        parts.append({"type": "text", "content": turn.text})
    for c in turn.tool_calls():
        parts.append({"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments})
    return [{"role": "assistant", "parts": parts, "finish_reason": turn.finish_reason}]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
