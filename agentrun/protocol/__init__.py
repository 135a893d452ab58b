"""agentrun's contract with outside apps and with runs in flight, importable inside the workflow
sandbox (pydantic and temporalio.common only): events (types, payloads, the parser), statuses
and kinds, and names (workflow, updates, signals, queries, activities, search attributes, error
types)."""
