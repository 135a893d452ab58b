"""Pure tool-policy rules: floors, presets and overrides, workspaces, stored text, redaction.
No server starts here."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.policy import (
    InvalidConfig,
    check_workspace,
    floor_of,
    resolve_policy,
    session_folder,
    workspace_for,
)
from activities.sandbox import Redactor
from activities.tool_exec import storable
from activities.tools import default_registry
from agentrun.contracts import AgentConfig, ApprovalPreset, ClientTool, ToolApproval, ToolKind
from agentrun.settings import load_settings


def approvals(config: AgentConfig, floors: dict[str, str] | None = None) -> dict[str, str]:
    policy = resolve_policy(default_registry(), config, floors)  # type: ignore[arg-type]
    return {t.name: t.approval for t in policy.tools}


def test_the_default_preset_follows_each_tools_default() -> None:
    got = approvals(AgentConfig())
    assert got["bash"] == "needs_approval"
    assert got["calculator"] == "auto" and got["read_file"] == "auto"


def test_a_run_can_tighten() -> None:
    assert set(approvals(AgentConfig(approval="require_all")).values()) == {"needs_approval"}
    got = approvals(AgentConfig(approval_overrides={"calculator": "needs_approval"}))
    assert got["calculator"] == "needs_approval"


@pytest.mark.parametrize(
    "config",
    [
        AgentConfig(approval_overrides={"bash": "auto"}),
        AgentConfig(approval="skip_all"),
        AgentConfig(approval="allow_listed", approval_allow=["bash"]),
    ],
    ids=["override", "skip_all", "allow_listed"],
)
def test_a_run_cannot_loosen_below_the_floor(config: AgentConfig) -> None:
    with pytest.raises(InvalidConfig) as info:
        approvals(config)
    assert "would run bash without approval" in str(info.value)
    assert "AGENTRUN_APPROVAL_FLOOR" in str(info.value)


def test_skip_all_is_fine_without_a_tool_that_needs_approval() -> None:
    got = approvals(AgentConfig(approval="skip_all", tools=["calculator", "ls"]))
    assert got == {"calculator": "auto", "ls": "auto"}


def test_the_worker_floor_can_be_lowered_or_raised_by_the_operator() -> None:
    assert approvals(AgentConfig(approval="skip_all"), {"bash": "auto"})["bash"] == "auto"
    # A raised floor applies to the default preset quietly, and refuses an explicit loosening.
    raised = {"read_file": "needs_approval"}
    assert approvals(AgentConfig(), raised)["read_file"] == "needs_approval"
    with pytest.raises(InvalidConfig):
        approvals(AgentConfig(approval="allow_safe"), raised)


def test_a_looser_old_config_is_raised_to_the_floor_when_not_strict() -> None:
    config = AgentConfig(approval_overrides={"bash": "auto"}, tools=["bash", "gone"])
    policy = resolve_policy(default_registry(), config, {}, strict=False)
    assert policy.needs_approval("bash")
    assert policy.server_names == ["bash"]


def test_enabled_is_the_runs_set_only() -> None:
    weather = ClientTool(name="weather")
    policy = resolve_policy(
        default_registry(), AgentConfig(tools=["calculator"], client_tools=[weather])
    )
    assert policy.enabled("calculator")
    assert not policy.enabled("bash")
    assert not policy.enabled("weather")  # a client tool never runs on the worker
    assert policy.needs_approval("bash")  # anything unknown counts as needing approval


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown tool"):
        approvals(AgentConfig(tools=["teleport"]))
    with pytest.raises(InvalidConfig, match="unknown tool"):
        approvals(AgentConfig(approval_overrides={"teleport": "auto"}))


def test_workspaces_stay_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    check_workspace(None, root)
    check_workspace(str(root), root)
    check_workspace(str(root / "a" / "b"), root)
    for bad in ("/", "/etc", str(root / ".." / "elsewhere"), "relative/path"):
        with pytest.raises(InvalidConfig):
            check_workspace(bad, root)
    (root / "link").symlink_to("/etc")
    with pytest.raises(InvalidConfig, match="outside"):
        check_workspace(str(root / "link"), root)


def test_each_session_gets_its_own_folder(tmp_path: Path) -> None:
    a = workspace_for(None, tmp_path, "team/alice")
    b = workspace_for(None, tmp_path, "team_alice")
    assert a != b and a.parent == b.parent == tmp_path.resolve() / "sessions"
    assert "/" not in session_folder("a/../../b") and ".." not in session_folder("..")
    assert session_folder("s-1") == session_folder("s-1")


def test_storable_replaces_what_postgres_refuses() -> None:
    assert storable("plain") == "plain"
    out = storable("a\x00b\x00")
    assert "\x00" not in out and out.startswith("a\ufffdb\ufffd")
    assert out.endswith("[2 NUL bytes replaced with \ufffd]")
    out = storable("x\ud800y")
    assert "\ud800" not in out and "1 lone surrogate replaced" in out
    out.encode("utf-8")  # encodable now


def test_redactor_hides_configured_secret_values() -> None:
    settings = load_settings(
        openai_api_key="sk-live-abcdef123",
        database_url="postgresql://app:db-pass-987@db:5432/agentrun",
        secret_env="MY_TOKEN,SHORT",
    )
    env = {
        "MY_TOKEN": "tok-55555",
        "SHORT": "abc",
        "AGENTRUN_PAYLOAD_KEYS": "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA,k2:BBBBBBBBBBBBBBBBBBBBBBBB",
    }
    redact = Redactor.from_settings(settings, env)
    text = (
        "key=sk-live-abcdef123 pw=db-pass-987 tok=tok-55555 short=abc "
        "k=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    )
    out = redact(text)
    assert "sk-live-abcdef123" not in out and "[redacted:OPENAI_API_KEY]" in out
    assert "db-pass-987" not in out and "[redacted:AGENTRUN_DATABASE_URL]" in out
    assert "tok-55555" not in out and "[redacted:MY_TOKEN]" in out
    assert "AAAAAAAA" not in out and "[redacted:AGENTRUN_PAYLOAD_KEYS]" in out
    assert "short=abc" in out  # too short to be worth redacting


# -- the policy value object: every preset, overrides on top, the floor under both -------------

AUTO, ASK = ToolApproval.AUTO, ToolApproval.NEEDS_APPROVAL
SAFE = ["ls", "read_file", "current_time", "calculator"]


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        (ApprovalPreset.TOOL_DEFAULT, dict.fromkeys(SAFE, AUTO)),
        (ApprovalPreset.REQUIRE_ALL, dict.fromkeys(SAFE, ASK)),
        (ApprovalPreset.ALLOW_SAFE, dict.fromkeys(SAFE, AUTO)),
        (ApprovalPreset.ALLOW_LISTED, {**dict.fromkeys(SAFE, ASK), "calculator": AUTO}),
        (ApprovalPreset.SKIP_ALL, dict.fromkeys(SAFE, AUTO)),
    ],
)
def test_each_preset_on_the_read_only_tools(
    preset: ApprovalPreset, expected: dict[str, ToolApproval]
) -> None:
    config = AgentConfig(approval=preset, tools=SAFE, approval_allow=["calculator"])
    policy = resolve_policy(default_registry(), config)
    assert {t.name: t.approval for t in policy.tools} == expected
    assert all(isinstance(t.approval, ToolApproval) for t in policy.tools)
    for name, approval in expected.items():
        assert policy.needs_approval(name) is (approval == ASK)


@pytest.mark.parametrize(
    "preset", [ApprovalPreset.TOOL_DEFAULT, ApprovalPreset.REQUIRE_ALL, ApprovalPreset.ALLOW_SAFE]
)
def test_presets_that_keep_bash_asking(preset: ApprovalPreset) -> None:
    policy = resolve_policy(default_registry(), AgentConfig(approval=preset))
    assert policy.needs_approval("bash")


def test_an_override_tightens_whatever_the_preset() -> None:
    config = AgentConfig(
        approval=ApprovalPreset.SKIP_ALL,
        tools=["calculator", "ls"],
        approval_overrides={"ls": ASK},
    )
    policy = resolve_policy(default_registry(), config)
    assert policy.needs_approval("ls") and not policy.needs_approval("calculator")


def test_an_override_beats_the_preset_where_the_floor_allows_it() -> None:
    config = AgentConfig(approval=ApprovalPreset.REQUIRE_ALL, approval_overrides={"ls": AUTO})
    policy = resolve_policy(default_registry(), config)
    assert not policy.needs_approval("ls") and policy.needs_approval("calculator")


def test_the_floor_of_a_tool_is_the_setting_or_its_own_default() -> None:
    registry = default_registry()
    bash, ls = registry.get("bash"), registry.get("ls")
    assert bash is not None and ls is not None
    assert floor_of(bash, {}) == ASK and floor_of(ls, {}) == AUTO
    assert floor_of(ls, {"ls": "needs_approval"}) == ASK
    assert floor_of(bash, {"bash": "auto"}) == AUTO


def test_client_tools_default_to_auto_and_can_be_made_to_ask() -> None:
    weather = ClientTool(name="weather")
    plain = resolve_policy(default_registry(), AgentConfig(tools=[], client_tools=[weather]))
    asking = resolve_policy(
        default_registry(),
        AgentConfig(tools=[], client_tools=[weather], approval_overrides={"weather": ASK}),
    )
    info = plain.info("weather")
    assert info is not None and (info.kind, info.approval) == (ToolKind.CLIENT, AUTO)
    assert not plain.needs_approval("weather") and asking.needs_approval("weather")
    assert plain.names == ["weather"] and plain.server_names == []


def test_a_client_tool_may_not_take_a_built_in_name() -> None:
    with pytest.raises(InvalidConfig, match="clash"):
        resolve_policy(default_registry(), AgentConfig(client_tools=[ClientTool(name="bash")]))
