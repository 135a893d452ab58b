"""Orchestration only: deterministic, no I/O, no clients, no os.environ."""

from __future__ import annotations

from workflows.agent import AgentRunWorkflow

ALL_WORKFLOWS = [AgentRunWorkflow]

__all__ = ["ALL_WORKFLOWS", "AgentRunWorkflow"]
