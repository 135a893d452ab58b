"""The web page for people in the loop (chat, live stream, approvals inbox): static files that
`agentrun serve` serves at `/`, over the HTTP API. No build step; no external resources."""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
