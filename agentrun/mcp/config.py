"""Where MCP servers are declared: the `[mcp.servers.NAME]` tables of the settings file
(agentrun.toml, or the file AGENTRUN_CONFIG_FILE names) and AGENTRUN_MCP_SERVERS (JSON, the
same tables keyed by name; it wins over the file for a name both declare).

Secrets are references, never values: a header, an environment value or a URL written as
`env:NAME` is read from the worker's environment when the server is connected, so the value
never reaches the database, the run's config or Temporal's history.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentrun.settings import Settings

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "ENV_SETTING",
    "FILE_SETTING",
    "McpConfigError",
    "McpServerConfig",
    "load_servers",
    "resolve_secret",
    "secret_names",
    "servers_of",
]

FILE_SETTING = "AGENTRUN_CONFIG_FILE"
ENV_SETTING = "AGENTRUN_MCP_SERVERS"
DEFAULT_CONFIG_FILE = Path("agentrun.toml")
# A server's name is the first half of its tools' names (server__tool), which model APIs
# bound to ^[a-zA-Z0-9_-]{1,64}$; no "__" inside so the split is unambiguous.
SERVER_NAME = re.compile(r"^[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*$")
MAX_SERVER_NAME = 30
ENV_REF = "env:"


class McpConfigError(ValueError):
    """A bad MCP server declaration; the message names the file (or variable), key and problem."""


class McpServerConfig(BaseModel):
    """One MCP server as the operator declared it (secrets still as `env:NAME` references)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    transport: Literal["stdio", "http"]
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=60, gt=0, le=3600)
    max_attempts: int = Field(default=3, ge=1, le=20)
    startup_timeout_s: float = Field(default=30, gt=0, le=600)
    # The least approval of the server's tools (default: read-only tools auto, others ask).
    approval: Literal["auto", "needs_approval"] | None = None
    # The tenants whose runs may use the server (README "HTTP API"); unset: every tenant.
    tenants: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _transport_from_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and "transport" not in data:
            if "command" in data:
                return {**data, "transport": "stdio"}
            if "url" in data:
                return {**data, "transport": "http"}
        return data

    @model_validator(mode="after")
    def _fields_of_transport(self) -> McpServerConfig:
        if self.transport == "stdio":
            if not self.command:
                raise ValueError("a stdio server needs `command`")
            if self.url or self.headers:
                raise ValueError("`url` and `headers` are for http servers, not stdio")
        else:
            if not self.url:
                raise ValueError("an http server needs `url`")
            if not self.url.startswith(("http://", "https://", ENV_REF)):
                raise ValueError(f"`url` must start with http:// or https:// (got {self.url!r})")
            if self.command or self.args or self.env or self.cwd:
                raise ValueError("`command`, `args`, `env` and `cwd` are for stdio servers")
        return self

    def describe(self) -> str:
        if self.transport == "stdio":
            return " ".join([str(self.command), *self.args])
        return str(self.url)


def resolve_secret(value: str, where: str) -> str:
    """`env:NAME` → the variable's value (McpConfigError when unset); anything else as is."""
    if not value.startswith(ENV_REF):
        return value
    name = value[len(ENV_REF) :]
    found = os.environ.get(name)
    if found is None:
        raise McpConfigError(f"{where} refers to the environment variable {name}, which is unset")
    return found


def secret_names(servers: Mapping[str, McpServerConfig]) -> set[str]:
    """The environment variables the servers' `env:NAME` references name: their values are
    redacted from what the servers answer, as AGENTRUN_SECRET_ENV's are."""
    names = set()
    for server in servers.values():
        for value in [*server.env.values(), *server.headers.values(), server.url or ""]:
            if value.startswith(ENV_REF):
                names.add(value[len(ENV_REF) :])
    return names


def config_file_path(configured: Path | None) -> Path | None:
    """The settings file: AGENTRUN_CONFIG_FILE when set (it must exist), else ./agentrun.toml
    when there is one."""
    if configured is not None:
        if not configured.is_file():
            raise McpConfigError(f"{FILE_SETTING}={configured}: no such file")
        return configured
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def _servers_table(data: dict[str, Any], where: str) -> dict[str, Any]:
    mcp = data.get("mcp", {})
    if not isinstance(mcp, dict):
        raise McpConfigError(f"{where}: key `mcp` must be a table")
    unknown = sorted(set(mcp) - {"servers"})
    if unknown:
        raise McpConfigError(f"{where}: unknown key `mcp.{unknown[0]}` (known: mcp.servers)")
    servers = mcp.get("servers", {})
    if not isinstance(servers, dict):
        raise McpConfigError(f"{where}: key `mcp.servers` must be a table")
    return servers


def _parse(servers: dict[str, Any], where: str, prefix: str) -> dict[str, McpServerConfig]:
    parsed: dict[str, McpServerConfig] = {}
    for name, table in servers.items():
        key = f"{prefix}{name}"
        if not SERVER_NAME.match(name) or len(name) > MAX_SERVER_NAME:
            raise McpConfigError(
                f"{where}: key `{key}`: a server name is 1-{MAX_SERVER_NAME} letters, digits, "
                "'-' or single '_' (its tools are named <server>__<tool>)"
            )
        if not isinstance(table, dict):
            raise McpConfigError(f"{where}: key `{key}` must be a table")
        try:
            parsed[name] = McpServerConfig.model_validate({**table, "name": name})
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            at = f"{key}.{loc}" if loc else key
            raise McpConfigError(f"{where}: key `{at}`: {err['msg']}") from None
    return parsed


def servers_of(settings: Settings) -> dict[str, McpServerConfig]:
    """The servers the worker's settings declare (McpConfigError when they are bad)."""
    return load_servers(settings.config_file, settings.mcp_servers)


def load_servers(
    config_file: Path | None = None, env_json: str | None = None
) -> dict[str, McpServerConfig]:
    """Every declared MCP server by name. Raises McpConfigError naming the file or variable,
    the key and the problem."""
    servers: dict[str, McpServerConfig] = {}
    path = config_file_path(config_file)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise McpConfigError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise McpConfigError(f"{path}: cannot be read: {exc.strerror}") from None
        servers.update(_parse(_servers_table(data, str(path)), str(path), "mcp.servers."))
    if env_json and env_json.strip():
        try:
            data = json.loads(env_json)
        except json.JSONDecodeError as exc:
            raise McpConfigError(f"{ENV_SETTING}: not valid JSON: {exc.msg}") from None
        if not isinstance(data, dict):
            raise McpConfigError(f"{ENV_SETTING}: must be a JSON object of servers by name")
        servers.update(_parse(data, ENV_SETTING, ""))
    return servers
