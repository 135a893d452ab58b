"""Orchestration only: deterministic, no I/O, no clients, no os.environ."""

from __future__ import annotations

from workflows.agent import AgentRunWorkflow
from workflows.webhook import WebhookDeliveryWorkflow

ALL_WORKFLOWS = [AgentRunWorkflow, WebhookDeliveryWorkflow]

__all__ = ["ALL_WORKFLOWS", "AgentRunWorkflow", "WebhookDeliveryWorkflow"]
