"""Orchestration only: deterministic, no I/O, no clients, no os.environ."""

from __future__ import annotations

from workflows.agent import AgentRunWorkflow
from workflows.webhook import WebhookDeliveryWorkflow

ALL_WORKFLOWS = [AgentRunWorkflow]
# On a task queue of their own (worker.build_webhook_worker), so slow receivers never take the
# activity slots that runs need.
WEBHOOK_WORKFLOWS = [WebhookDeliveryWorkflow]

__all__ = ["ALL_WORKFLOWS", "WEBHOOK_WORKFLOWS", "AgentRunWorkflow", "WebhookDeliveryWorkflow"]
