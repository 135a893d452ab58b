"""MCP declarations (agentrun.toml / AGENTRUN_MCP_SERVERS), tool names and approval rules:
pure, no server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from activities.mcp_tools import TOOL_NAME, InvalidMcpConfig, mcp_approval, tool_name
from activities.policy import InvalidConfig, resolve_policy
from activities.tools import default_registry
from agentrun.contracts import AgentConfig, ToolApproval
from agentrun.mcp.config import McpConfigError, load_servers, resolve_secret

GOOD = """
[mcp.servers.files]
command = "npx"
args = ["-y", "@modelcontextprotocol/server-filesystem", "/srv/data"]
env = { LOG_LEVEL = "info", API_KEY = "env:FILES_KEY" }
cwd = "/srv"

[mcp.servers.github]
url = "https://api.githubcopilot.com/mcp/"
headers = { Authorization = "env:GITHUB_AUTH" }
timeout_s = 30
max_attempts = 2
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agentrun.toml"
    path.write_text(text)
    return path


def test_a_file_declares_stdio_and_http_servers(tmp_path: Path) -> None:
    servers = load_servers(write(tmp_path, GOOD))
    files, github = servers["files"], servers["github"]
    assert (files.transport, files.command, files.cwd) == ("stdio", "npx", "/srv")
    assert files.env["API_KEY"] == "env:FILES_KEY"  # a reference, resolved at connect time
    assert (github.transport, github.timeout_s, github.max_attempts) == ("http", 30, 2)
    assert github.headers == {"Authorization": "env:GITHUB_AUTH"}


def test_the_environment_declares_servers_too_and_wins(tmp_path: Path) -> None:
    env = json.dumps({"github": {"url": "http://127.0.0.1:1/mcp"}, "x": {"command": "srv"}})
    servers = load_servers(write(tmp_path, GOOD), env)
    assert servers["github"].url == "http://127.0.0.1:1/mcp" and servers["x"].command == "srv"
    assert set(servers) == {"files", "github", "x"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[mcp.servers.a]\nargs = []\n", "key `mcp.servers.a.transport`"),
        ('[mcp.servers.a]\ncommand = "x"\nurl = "http://h"\n', "`url` and `headers` are for http"),
        ('[mcp.servers.a]\nurl = "ftp://h"\n', "must start with http:// or https://"),
        ('[mcp.servers.a]\ncommand = "x"\ntimeout = 3\n', "key `mcp.servers.a.timeout`: Extra"),
        ('[mcp.servers.a]\ncommand = "x"\ntimeout_s = -1\n', "mcp.servers.a.timeout_s"),
        ('[mcp.servers."a__b"]\ncommand = "x"\n', "a server name is"),
        ('[mcp.servers."has space"]\ncommand = "x"\n', "a server name is"),
        ("[mcp.tools]\nx = 1\n", "unknown key `mcp.tools`"),
        ("[mcp.servers\n", "not valid TOML"),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_key_and_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(McpConfigError) as err:
        load_servers(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_bad_environment_json_and_a_missing_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(McpConfigError, match="AGENTRUN_MCP_SERVERS: not valid JSON"):
        load_servers(None, "{nope")
    with pytest.raises(
        McpConfigError, match=r"AGENTRUN_MCP_SERVERS: key `a.url`: Input should be a valid string"
    ):
        load_servers(None, json.dumps({"a": {"url": 5}}))
    with pytest.raises(McpConfigError, match=r"AGENTRUN_CONFIG_FILE=.*: no such file"):
        load_servers(tmp_path / "missing.toml")


def test_secrets_are_read_from_the_environment_only_when_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GITHUB_AUTH", "Bearer s3cret")
    assert resolve_secret("env:GITHUB_AUTH", "h") == "Bearer s3cret"
    assert resolve_secret("plain", "h") == "plain"
    monkeypatch.delenv("GITHUB_AUTH")
    with pytest.raises(McpConfigError, match=r"server x headers.Authorization refers to .*GITHUB"):
        resolve_secret("env:GITHUB_AUTH", "server x headers.Authorization")


def test_a_run_chooses_servers_or_some_of_their_tools() -> None:
    config = AgentConfig(mcp_servers=["files", {"server": "github", "tools": ["search"]}])
    assert [(c.server, c.tools) for c in config.mcp_servers or []] == [
        ("files", None),
        ("github", ["search"]),
    ]
    with pytest.raises(ValueError, match="names files more than once"):
        AgentConfig(mcp_servers=["files", "files"])
    with pytest.raises(ValueError, match="server"):
        AgentConfig(mcp_servers=["a__b"])


def test_names_are_namespaced_and_must_fit_model_apis() -> None:
    assert tool_name("github", "search_issues") == "github__search_issues"
    assert TOOL_NAME.match(tool_name("github", "search_issues"))
    assert not TOOL_NAME.match(tool_name("github", "search.issues"))
    assert not TOOL_NAME.match(tool_name("github", "x" * 60))


READ_ONLY = {"readOnlyHint": True}
DESTRUCTIVE = {"destructiveHint": True}


@pytest.mark.parametrize(
    ("annotations", "preset", "expected"),
    [
        (READ_ONLY, "tool_default", "needs_approval"),
        (READ_ONLY, "allow_safe", "auto"),
        ({**READ_ONLY, **DESTRUCTIVE}, "allow_safe", "needs_approval"),
        (DESTRUCTIVE, "allow_safe", "needs_approval"),
        ({}, "allow_safe", "needs_approval"),
        (READ_ONLY, "require_all", "needs_approval"),
        (READ_ONLY, "skip_all", "auto"),
    ],
)
def test_annotations_feed_the_default_policy(
    annotations: dict[str, bool], preset: str, expected: str
) -> None:
    config = AgentConfig(approval=preset)
    assert mcp_approval("s__t", annotations, config, {}) == expected


def test_a_run_cannot_loosen_an_mcp_tool_below_its_floor() -> None:
    for config in (
        AgentConfig(approval="skip_all"),
        AgentConfig(approval_overrides={"s__t": "auto"}),
    ):
        with pytest.raises(InvalidMcpConfig, match="would run s__t without approval"):
            mcp_approval("s__t", DESTRUCTIVE, config, {})
    # The operator may lower the floor: the worker's setting or the server's declaration.
    loose = AgentConfig(approval_overrides={"s__t": "auto"})
    assert mcp_approval("s__t", {}, loose, {"s__t": "auto"}) == ToolApproval.AUTO
    assert mcp_approval("s__t", {}, loose, {}, "auto") == ToolApproval.AUTO
    # ... or raise it: a read-only tool the worker's floor says asks, asks.
    with pytest.raises(InvalidMcpConfig):
        mcp_approval(
            "s__t", READ_ONLY, AgentConfig(approval="allow_safe"), {"s__t": "needs_approval"}
        )


def test_opening_accepts_approval_settings_for_the_runs_mcp_tools_only() -> None:
    ok = AgentConfig(mcp_servers=["s"], approval_overrides={"s__t": "needs_approval"})
    resolve_policy(default_registry(), ok)  # checked when the list is known
    with pytest.raises(InvalidConfig, match="unknown tool"):
        resolve_policy(default_registry(), AgentConfig(approval_overrides={"s__t": "auto"}))
    other = AgentConfig(mcp_servers=["s"], approval_allow=["other__t"])
    with pytest.raises(InvalidConfig, match="other__t"):
        resolve_policy(default_registry(), other)


def test_a_name_that_collides_is_refused_with_a_clear_message() -> None:
    from temporalio.exceptions import ApplicationError

    from activities.mcp_tools import McpTools
    from agentrun.mcp.pool import McpPool

    tools = McpTools(None, McpPool({}), default_registry(), {})  # type: ignore[arg-type]
    client = AgentConfig(client_tools=[{"name": "s__t"}], mcp_servers=["s"])
    with pytest.raises(ApplicationError, match="'s__t' collides with a built-in or client tool"):
        tools._check_names([{"name": "s__t"}], client)
    with pytest.raises(ApplicationError, match="'s__t' collides with another MCP tool"):
        tools._check_names([{"name": "s__t"}, {"name": "s__t"}], AgentConfig(mcp_servers=["s"]))
    overrides = AgentConfig(mcp_servers=["s"], approval_overrides={"s__gone": "needs_approval"})
    with pytest.raises(ApplicationError, match="unknown MCP tool 's__gone'"):
        tools._check_names([{"name": "s__t"}], overrides)
