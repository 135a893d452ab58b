"""Issue 14: which OTEL_* variables turn tracing on, and bad values refused naming the variable
(through the settings, as a bad AGENTRUN_* value is); metric labels stay bounded."""

from __future__ import annotations

import pytest

from agentrun.settings import SettingsError, load_settings
from agentrun.telemetry import metrics
from agentrun.telemetry.genai import error_kind
from agentrun.telemetry.tracing import _exporters, check_env, tracing_requested


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),  # a name alone exports nothing
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),  # compose's empty default
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, False),
    ],
)
def test_what_turns_tracing_on(env: dict[str, str], on: bool) -> None:
    assert tracing_requested(env) is on


def test_the_exporters_follow_the_protocol() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    (http,) = _exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert isinstance(http, Http)
    (grpc,) = _exporters(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        }
    )
    assert isinstance(grpc, Grpc)
    assert len(_exporters({"OTEL_TRACES_EXPORTER": "otlp,console"})) == 2


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp"),
    ],
)
def test_a_bad_otel_value_stops_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    with pytest.raises(ValueError, match=variable):
        check_env({variable: value})
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=f"{variable}: '{value}' is not supported"):
        load_settings()


def test_metrics_port_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTRUN_METRICS_PORT", "")
    assert load_settings().metrics_port is None  # compose's empty default: off
    monkeypatch.setenv("AGENTRUN_METRICS_PORT", "70000")
    with pytest.raises(SettingsError, match="AGENTRUN_METRICS_PORT"):
        load_settings()


def test_error_kinds_are_bounded_names() -> None:
    import asyncio

    from temporalio.exceptions import ApplicationError

    assert error_kind(ApplicationError("x", type="ModelHTTP429")) == "429"
    assert error_kind(ApplicationError("x", type="ModelHTTP503")) == "503"
    assert error_kind(ApplicationError("x", type="ModelStream")) == "malformed"
    assert error_kind(ApplicationError("x", type="ModelTimeout")) == "timeout"
    assert error_kind(ApplicationError("x", type="ModelConnection")) == "connection"
    assert error_kind(asyncio.CancelledError()) == "cancelled"


def test_made_up_model_names_cannot_grow_the_series(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_models", set())
    names = [metrics.model_label(f"m{i}") for i in range(metrics.MAX_MODEL_LABELS + 50)]
    assert len(set(names)) == metrics.MAX_MODEL_LABELS + 1 and names[-1] == "other"
    assert metrics.model_label("m0") == "m0"  # one seen before keeps its name
