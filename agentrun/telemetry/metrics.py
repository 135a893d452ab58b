"""agentrun's Prometheus metrics on a worker: instruments on the Temporal SDK runtime's meter, so
one /metrics endpoint (the runtime's PrometheusConfig on AGENTRUN_METRICS_PORT) serves the SDK's
own metrics and ours.

Inside an activity the activity's meter is used (it adds namespace, task_queue and
activity_type labels), so each worker records to the runtime its client was made with; with no
metrics configured that meter is a no-op. Labels are bounded: model names, tool names the
worker's registry knows, statuses and error kinds; never run, session or call ids.

Names (Prometheus, counters get `_total`): see METRIC_NAMES and the README "Observability"."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from temporalio import activity
from temporalio.common import MetricMeter

from agentrun.protocol.statuses import RunStatus

if TYPE_CHECKING:
    from temporalio.runtime import Runtime

__all__ = [
    "HISTOGRAM_BUCKETS",
    "METRIC_NAMES",
    "decision_recorded",
    "meter",
    "model_call",
    "prometheus_runtime",
    "run_status_changed",
    "set_approvals_waiting",
    "stream_commits",
    "tool_call",
]

log = logging.getLogger("agentrun.telemetry")
TOKENS = "agentrun_model_tokens"
COST = "agentrun_model_cost_usd"
MODEL_CALLS = "agentrun_model_calls"
MODEL_DURATION = "agentrun_model_call_duration_seconds"
MODEL_TTFT = "agentrun_model_time_to_first_token_seconds"
MODEL_ERRORS = "agentrun_model_errors"
TOOL_CALLS = "agentrun_tool_calls"
RUNS_FINISHED = "agentrun_runs_finished"
APPROVALS_WAITING = "agentrun_approvals_waiting"
APPROVAL_WAIT = "agentrun_approval_wait_seconds"
STREAM_COMMITS = "agentrun_stream_commits"

_LATENCY = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
HISTOGRAM_BUCKETS: dict[str, Sequence[float]] = {
    MODEL_DURATION: _LATENCY,
    MODEL_TTFT: _LATENCY,
    APPROVAL_WAIT: [1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600],
    COST: [0.0001, 0.001, 0.01, 0.05, 0.1, 0.5, 1, 5],
}
# As Prometheus shows them (counters with _total; histograms as _bucket/_sum/_count).
METRIC_NAMES: dict[str, str] = {
    f"{TOKENS}_total": "counter: tokens by model and direction (input|output)",
    COST: "histogram: cost in USD of each priced model call, by model (_sum: total cost)",
    f"{MODEL_CALLS}_total": "counter: model calls by model and outcome (ok|error)",
    MODEL_DURATION: "histogram: model call latency, by model",
    MODEL_TTFT: "histogram: time to first token, by model",
    f"{MODEL_ERRORS}_total": "counter: failed model calls by model and kind",
    f"{TOOL_CALLS}_total": "counter: tool calls by tool and outcome (ok|error|retry|not_run)",
    f"{RUNS_FINISHED}_total": "counter: runs by final status (done|failed|canceled)",
    APPROVALS_WAITING: "gauge: tool calls waiting for approval (whole database)",
    APPROVAL_WAIT: "histogram: time from a tool call to its decision, by decision",
    f"{STREAM_COMMITS}_total": "counter: message.delta commits of streamed text, by model",
}


# A model name is a run's config, which an API client chooses: past this many distinct names a
# process reports the rest as "other", so a stream of made-up names cannot grow the series.
MAX_MODEL_LABELS = 100
_models: set[str] = set()


F = TypeVar("F", bound=Callable[..., None])


def _never_raises(fn: F) -> F:
    """Metrics never fail the activity that records them."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:
            log.warning("could not record metric %s", fn.__name__, exc_info=True)

    return wrapper  # type: ignore[return-value]


def model_label(model: str) -> str:
    if model in _models:
        return model
    if len(_models) >= MAX_MODEL_LABELS:
        return "other"
    _models.add(model)
    return model


def prometheus_runtime(host: str, port: int) -> Runtime:
    """A Temporal runtime that serves its metrics, and ours, on http://host:port/metrics."""
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"{host}:{port}",
                counters_total_suffix=True,
                durations_as_seconds=True,
                histogram_bucket_overrides=HISTOGRAM_BUCKETS,
            )
        )
    )


def meter() -> MetricMeter:
    """The current activity's meter; outside an activity the no-op meter."""
    try:
        return activity.metric_meter()
    except RuntimeError:
        return MetricMeter.noop


@_never_raises
def model_call(
    m: MetricMeter,
    model: str,
    *,
    input_tokens: int | None,
    output_tokens: int | None,
    duration_s: float | None,
    ttft_s: float | None,
    error_kind: str | None,
    cost_usd: Decimal | None,
    commits: int = 0,
) -> None:
    """One model attempt: its tokens, cost (None: unknown price, nothing recorded), latency,
    time to first token, outcome and delta commits."""
    model = model_label(model)
    labels = {"model": model}
    tokens = m.create_counter(TOKENS, "Model tokens by direction", "{token}")
    if input_tokens:
        tokens.add(input_tokens, {**labels, "direction": "input"})
    if output_tokens:
        tokens.add(output_tokens, {**labels, "direction": "output"})
    if cost_usd is not None:
        m.create_histogram_float(COST, "Cost of priced model calls", "USD").record(
            float(cost_usd), labels
        )
    outcome = "ok" if error_kind is None else "error"
    m.create_counter(MODEL_CALLS, "Model calls by outcome").add(1, {**labels, "outcome": outcome})
    if duration_s is not None:
        m.create_histogram_float(MODEL_DURATION, "Model call latency", "s").record(
            duration_s, labels
        )
    if ttft_s is not None:
        m.create_histogram_float(MODEL_TTFT, "Time to first token", "s").record(ttft_s, labels)
    if error_kind is not None:
        m.create_counter(MODEL_ERRORS, "Failed model calls by kind").add(
            1, {**labels, "kind": error_kind}
        )
    stream_commits(m, model, commits)


@_never_raises
def stream_commits(m: MetricMeter, model: str, commits: int) -> None:
    if commits:
        m.create_counter(STREAM_COMMITS, "Streamed text commits (message.delta)").add(
            commits, {"model": model}
        )


@_never_raises
def tool_call(m: MetricMeter, tool: str, outcome: str) -> None:
    m.create_counter(TOOL_CALLS, "Tool calls by tool and outcome").add(
        1, {"tool": tool, "outcome": outcome}
    )


@_never_raises
def run_status_changed(m: MetricMeter, status: str) -> None:
    """A run's status moved (the store's write changed it): counted when it is final, so a
    retried activity or a late write never counts a run twice."""
    if RunStatus(status).terminal:
        m.create_counter(RUNS_FINISHED, "Runs by final status").add(1, {"status": status})


@_never_raises
def decision_recorded(m: MetricMeter, row: Any, asked: datetime) -> None:
    """A decision on a tool call, if this call recorded it (its decided_at, stamped by this
    process, is not before `asked`): how long the call waited, from its record to its
    decision."""
    decided, created = getattr(row, "decided_at", None), getattr(row, "created_at", None)
    if decided is None or created is None or decided < asked or row.decision is None:
        return
    waited = max((decided - created).total_seconds(), 0.0)
    m.create_histogram_float(APPROVAL_WAIT, "Time a tool call waited for its decision", "s").record(
        waited, {"decision": str(row.decision)}
    )


@_never_raises
def set_approvals_waiting(
    m: MetricMeter, count: int, labels: Mapping[str, str] | None = None
) -> None:
    m.create_gauge(APPROVALS_WAITING, "Tool calls waiting for approval").set(count, labels or {})
