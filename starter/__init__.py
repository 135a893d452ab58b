"""Client-side scripts and the `agentrun` CLI."""
