"""Aids for tests and the demo, not for production runs: the offline model server (a real
HTTP server speaking the chat-completions streaming protocol with scripted replies and faults).
The worker starts it only when no model endpoint is configured."""
