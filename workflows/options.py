"""One options object per kind of step the workflow schedules: bookkeeping (local activities),
a model turn, a tool run, and the record of a tool outcome. Timeouts and retries are decided
here, once; the workflow passes them with `**`.

Every step has a schedule-to-close bound (tests/test_edges_workflow.py checks it): a database
that stays down, or a worker that keeps dying, ends a step instead of retrying it for ever.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypedDict

from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityCancellationType

from agentrun.contracts import AgentConfig, ToolInfo

__all__ = [
    "BOOKKEEPING",
    "CLOSE_REQUEST",
    "DATA_ERROR_TYPES",
    "LIST_MCP_TOOLS",
    "RECORD_OUTCOME",
    "ActivityOptions",
    "LocalActivityOptions",
    "model_turn_options",
    "tool_run_options",
]


class LocalActivityOptions(TypedDict, total=False):
    """The keyword arguments of execute_local_activity_method this module sets (the SDK's own
    LocalActivityConfig also holds `summary`, which each call sets itself)."""

    start_to_close_timeout: timedelta
    schedule_to_close_timeout: timedelta
    retry_policy: RetryPolicy


class ActivityOptions(LocalActivityOptions, total=False):
    """The same for execute_activity_method."""

    heartbeat_timeout: timedelta
    cancellation_type: ActivityCancellationType


# Errors no retry can fix: a value the database refuses to store (SQLAlchemy and psycopg both
# name theirs DataError) fails the step at once instead of retrying it until its deadline.
DATA_ERROR_TYPES = ["DataError"]
TOOL_INFRA_RETRY_S = 600
MODEL_INFRA_RETRY_S = 900
DEFAULT_TOOL_TIMEOUT_S = 60
DEFAULT_TOOL_ATTEMPTS = 3

# Bookkeeping (open the run, move its status, record a decision) runs as local activities:
# short idempotent database writes that need no task-queue round trip of their own. The
# deadline rides out a database outage of several minutes but never retries forever; the
# maximum interval stays under the SDK's local retry threshold (1 minute), above which a
# local activity's backoff becomes a timer in history.
BOOKKEEPING_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=DATA_ERROR_TYPES,
)
BOOKKEEPING_TIMEOUT = timedelta(seconds=30)
BOOKKEEPING_DEADLINE = timedelta(minutes=10)

BOOKKEEPING: LocalActivityOptions = {
    "start_to_close_timeout": BOOKKEEPING_TIMEOUT,
    "schedule_to_close_timeout": BOOKKEEPING_DEADLINE,
    "retry_policy": BOOKKEEPING_RETRY,
}

# The run's request that Temporal cancel its workflow (the run is recorded CANCELED already):
# one short call to the frontend. Failing it costs only the close status (the workflow then
# completes, as runs did before), so it is bounded in seconds, not minutes.
CLOSE_REQUEST: LocalActivityOptions = {
    "start_to_close_timeout": timedelta(seconds=10),
    "schedule_to_close_timeout": timedelta(seconds=60),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(milliseconds=200),
        maximum_interval=timedelta(seconds=5),
        non_retryable_error_types=["NotFoundError"],
    ),
}

# The record of a tool call's outcome that no tool run produced: a bookkeeping write too, but
# an activity of its own (on the task queue), as the tool's result is.
RECORD_OUTCOME: ActivityOptions = {
    "start_to_close_timeout": BOOKKEEPING_TIMEOUT,
    "schedule_to_close_timeout": BOOKKEEPING_DEADLINE,
    "retry_policy": BOOKKEEPING_RETRY,
}

# Listing the run's MCP tools at open: a server that is slow to start or briefly down is
# tried again for a few minutes; a run config the worker refuses (InvalidConfig) is not.
LIST_MCP_TOOLS: ActivityOptions = {
    "start_to_close_timeout": timedelta(minutes=2),
    "schedule_to_close_timeout": timedelta(minutes=5),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1),
        maximum_interval=timedelta(seconds=20),
        maximum_attempts=6,
        non_retryable_error_types=[*DATA_ERROR_TYPES, "InvalidConfig"],
    ),
}


def model_turn_options(config: AgentConfig) -> ActivityOptions:
    return {
        "start_to_close_timeout": timedelta(seconds=config.model_timeout_s + 30),
        # The activity heartbeats every second from a background task and times stalls
        # itself; this catches a lost worker.
        "heartbeat_timeout": timedelta(seconds=config.model_heartbeat_timeout_s + 2),
        # The model budget (model_max_attempts) is counted by the activity in llm_calls, so
        # attempts that failed on the database do not spend it; time bounds the rest.
        "schedule_to_close_timeout": timedelta(
            seconds=(config.model_timeout_s + 90) * config.model_max_attempts + MODEL_INFRA_RETRY_S
        ),
        "retry_policy": RetryPolicy(
            initial_interval=timedelta(seconds=1),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=60),
        ),
        # A cancel waits for the activity to stop (its heartbeat carries the cancel), so
        # no stream outlives its run and the partial text is in the event log first.
        "cancellation_type": ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    }


def tool_run_options(info: ToolInfo | None, config: AgentConfig) -> ActivityOptions:
    timeout_s = (info.timeout_s if info else DEFAULT_TOOL_TIMEOUT_S) + 30
    attempts = info.max_attempts if info else DEFAULT_TOOL_ATTEMPTS
    return {
        "start_to_close_timeout": timedelta(seconds=timeout_s),
        # The tool's own retries are counted by the activity (tool_calls.attempts); the
        # activity itself retries through lost workers and database outages, bounded by time.
        "schedule_to_close_timeout": timedelta(seconds=timeout_s * attempts + TOOL_INFRA_RETRY_S),
        "heartbeat_timeout": timedelta(seconds=config.tool_heartbeat_timeout_s),
        "retry_policy": RetryPolicy(
            initial_interval=timedelta(seconds=1),
            maximum_interval=timedelta(seconds=10),
            non_retryable_error_types=DATA_ERROR_TYPES,
        ),
        # A cancel waits until the tool's process is gone.
        "cancellation_type": ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    }
