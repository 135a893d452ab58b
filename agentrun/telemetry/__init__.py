"""Observability (README "Observability"): OpenTelemetry traces (tracing), Prometheus metrics
of workers (metrics) and of the HTTP API (api_metrics), and the GenAI spans of model and tool
calls (genai). Everything here is off, and costs next to nothing, unless configured."""
