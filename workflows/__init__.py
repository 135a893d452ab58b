"""Orchestration only: deterministic, no I/O, no clients, no os.environ."""

from __future__ import annotations

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from workflows.agent import AgentRunWorkflow

ALL_WORKFLOWS = [AgentRunWorkflow]

# The sandbox re-imports a workflow's module for every run it starts (and for every replay
# after an eviction); under a burst of new runs that import was a tenth of the worker's
# Python time and sat inside each run's first workflow task (bench/burst.py). Our workflow
# modules keep no state at module level and already import their logic, contracts and
# activities passed through (workflows/loop.py, steps.py, rules.py), so they are passed through
# whole: imported once per worker. The sandbox's runtime restrictions (no I/O, no wall clock)
# still apply to the code as it runs. Workers and the replay test use this runner.
SANDBOX_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        "workflows", "agentrun", "activities"
    )
)

__all__ = ["ALL_WORKFLOWS", "SANDBOX_RUNNER", "AgentRunWorkflow"]
