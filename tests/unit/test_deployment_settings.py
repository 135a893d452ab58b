"""Worker Versioning settings: defaults an operator can rely on, and bad values named."""

from __future__ import annotations

import re

import pytest
from temporalio.common import VersioningBehavior

from agentrun.deployment import default_build_id, deployment_config, deployment_version
from agentrun.settings import SettingsError, load_settings


def test_versioned_and_pinned_by_default_with_a_derived_build_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AGENTRUN_WORKER_VERSIONING", "AGENTRUN_BUILD_ID", "AGENTRUN_DEPLOYMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert s.worker_versioning and s.set_current_version == "auto"
    config = deployment_config(s)
    assert config is not None and config.use_worker_versioning
    assert config.default_versioning_behavior == VersioningBehavior.PINNED
    assert config.version.deployment_name == "agentrun"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*-[0-9a-f]{12}", config.version.build_id)
    assert config.version.build_id == default_build_id()  # stable for the same code


def test_an_explicit_build_id_wins_and_versioning_can_be_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTRUN_BUILD_ID", "2026.11.26-abc123")
    assert deployment_version(load_settings()).build_id == "2026.11.26-abc123"
    monkeypatch.setenv("AGENTRUN_BUILD_ID", "")
    assert deployment_version(load_settings()).build_id == default_build_id()
    monkeypatch.setenv("AGENTRUN_WORKER_VERSIONING", "false")
    assert deployment_config(load_settings()) is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AGENTRUN_DEPLOYMENT_NAME", "agent.run"),
        ("AGENTRUN_BUILD_ID", "has space"),
        ("AGENTRUN_SET_CURRENT_VERSION", "sometimes"),
        ("AGENTRUN_CODEC_SERVER_PORT", "0"),
    ],
)
def test_a_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_the_build_id_covers_every_module_a_replay_depends_on() -> None:
    from agentrun.deployment import _ROOT, _workflow_side_sources

    hashed = {p.relative_to(_ROOT).as_posix() for p in _workflow_side_sources()}
    for needed in (
        "workflows/agent.py",
        "workflows/webhook.py",
        "agentrun/contracts/run.py",
        "agentrun/contracts/steps.py",
        "agentrun/protocol/events.py",
        "agentrun/text.py",
    ):
        assert needed in hashed, needed
