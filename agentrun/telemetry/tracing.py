"""OpenTelemetry traces: a tracer provider from the standard OTEL_* variables, and the Temporal
SDK's TracingInterceptor on every client agentrun connects (workers inherit it from their
client), so a run is one trace from the request that started it to every activity.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
OTEL_TRACES_EXPORTER (other than `none`) is set, or OTEL_SDK_DISABLED is true: then no provider
is made, no interceptor is added and our span helpers return at once."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

__all__ = [
    "TRACER_NAME",
    "TracingConfigError",
    "check_env",
    "client_interceptors",
    "configure_tracing",
    "shutdown_tracing",
    "tracer",
    "tracing_requested",
    "use_provider",
]

log = logging.getLogger("agentrun.telemetry")
TRACER_NAME = "agentrun"
_TRIGGERS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
)
_lock = threading.Lock()
_provider: TracerProvider | None = None
_configured = False


class TracingConfigError(ValueError):
    """An OTEL_* variable agentrun cannot act on (it names the variable)."""


def tracing_requested(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters == "none":
        return False
    return any(env.get(name, "").strip() for name in _TRIGGERS)


_EXPORTERS = ("otlp", "console", "none")
_PROTOCOLS = ("http/protobuf", "grpc")


def check_env(env: Mapping[str, str] | None = None) -> None:
    """Refuse OTEL_* values agentrun cannot act on, naming the variable (settings call this,
    so a bad value stops a process at start-up, as a bad AGENTRUN_* one does)."""
    env = os.environ if env is None else env
    for name in env.get("OTEL_TRACES_EXPORTER", "").lower().split(","):
        if name.strip() and name.strip() not in _EXPORTERS:
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER: {name.strip()!r} is not supported; use otlp, console or "
                "none"
            )
    for var in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = env.get(var, "").strip()
        if value and value not in _PROTOCOLS:
            raise TracingConfigError(
                f"{var}: {value!r} is not supported; use http/protobuf or grpc"
            )


def _exporters(env: Mapping[str, str]) -> list[Any]:
    names = [n.strip() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")]
    out: list[Any] = []
    for name in filter(None, names):
        if name == "otlp":
            protocol = (
                env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf"
            ).strip()
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter as GrpcExporter,
                )

                out.append(GrpcExporter())
            elif protocol == "http/protobuf":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter as HttpExporter,
                )

                out.append(HttpExporter())
            else:
                raise TracingConfigError(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported; use "
                    "http/protobuf or grpc"
                )
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            out.append(ConsoleSpanExporter())
        elif name != "none":
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER: {name!r} is not supported; use otlp, console or none"
            )
    return out


def configure_tracing(service_name: str, env: Mapping[str, str] | None = None) -> bool:
    """Make and install the process's tracer provider from OTEL_* once (the first caller's
    `service_name` is the default when OTEL_SERVICE_NAME is unset). True when tracing is on."""
    global _configured
    env = os.environ if env is None else env
    with _lock:
        if _configured or _provider is not None:
            return _provider is not None
        _configured = True
        if not tracing_requested(env):
            return False
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        name = env.get("OTEL_SERVICE_NAME", "").strip() or service_name
        provider = TracerProvider(resource=Resource.create({"service.name": name}))
        for exporter in _exporters(env):
            provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _set(provider)
        log.info("OpenTelemetry tracing on: service %s", name)
        return True


def use_provider(provider: TracerProvider | None) -> None:
    """Trace with `provider` (tests: an in-memory exporter), or stop tracing (None). Clients
    connected afterwards get the interceptor; those connected before keep what they had."""
    with _lock:
        _set(provider)


def _set(provider: TracerProvider | None) -> None:
    global _provider, _tracer
    _provider = provider
    _tracer = provider.get_tracer(TRACER_NAME) if provider is not None else None


_tracer: Tracer | None = None


def tracer() -> Tracer | None:
    """agentrun's tracer, or None when tracing is off (callers skip their spans)."""
    return _tracer


def client_interceptors() -> list[Any]:
    """What a Temporal client gets: the SDK's TracingInterceptor when tracing is on. Workers
    built on the client inherit it (client interceptors that are also worker interceptors
    apply to the worker), so it is never added to a worker a second time."""
    configure_tracing("agentrun")
    current = _tracer
    if current is None:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(current)]


def shutdown_tracing() -> None:
    """Export what is buffered (a short-lived CLI leaves with os._exit, skipping atexit)."""
    provider = _provider
    if provider is not None:
        try:
            provider.force_flush(timeout_millis=5000)
        except Exception:  # a collector that is down must not fail the command
            log.debug("could not flush spans", exc_info=True)


_capture = False


def set_capture_content(on: bool) -> None:
    """AGENTRUN_OTEL_CAPTURE_CONTENT: put prompt, completion and tool text on spans."""
    global _capture
    _capture = on


def capture_content() -> bool:
    return _capture


def provider() -> TracerProvider | None:
    return _provider
