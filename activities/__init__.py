"""All I/O of agentrun: the model stream, tools and persistence, one module per concern."""
