"""Orchestration only: deterministic, no I/O, no clients, no os.environ."""

from __future__ import annotations

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from workflows.agent import AgentRunWorkflow
from workflows.retention import SessionRetentionWorkflow
from workflows.session import SessionQueueWorkflow
from workflows.webhook import WebhookDeliveryWorkflow

ALL_WORKFLOWS = [AgentRunWorkflow, SessionRetentionWorkflow, SessionQueueWorkflow]
# On a task queue of their own (worker.build_webhook_worker), so slow receivers never take the
# activity slots that runs need.
WEBHOOK_WORKFLOWS = [WebhookDeliveryWorkflow]

# The sandbox re-imports a workflow's module for every run it starts (and for every replay
# after an eviction); under a burst of new runs that import was a tenth of the worker's
# Python time and sat inside each run's first workflow task (bench/burst.py). Our workflow
# modules keep no state at module level and already import their logic, contracts and
# activities passed through (workflows/loop.py, steps.py, rules.py), so they are passed through
# whole: imported once per worker. The sandbox's checks that work by swapping modules (a
# wall-clock read, os.environ) never reached the passed-through loop, steps and rules, and now
# do not reach agent.py either: determinism rests on review and on the replay test, which
# replays every recorded history under this runner and the SDK's default one.
SANDBOX_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        "workflows", "agentrun", "activities"
    )
)

__all__ = [
    "ALL_WORKFLOWS",
    "SANDBOX_RUNNER",
    "WEBHOOK_WORKFLOWS",
    "AgentRunWorkflow",
    "SessionQueueWorkflow",
    "SessionRetentionWorkflow",
    "WebhookDeliveryWorkflow",
]
