"""agentrun: durable LLM agent runs on Temporal, recorded in Postgres."""

from __future__ import annotations

__version__ = "0.1.0"
