"""Settings validation, and docker-compose.yml checked against the settings (no Docker engine
runs here, so the file is loaded and its services, ports and variable names are checked)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agentrun.settings import Settings, SettingsError, _variable_name, load_settings


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("AGENTRUN_DATABASE_URL", "mysql://x/y", "AGENTRUN_DATABASE_URL"),
        ("AGENTRUN_DATABASE_URL", "postgresql://h:notaport/db", "bad port"),
        ("AGENTRUN_DATABASE_URL", "postgresql://h:5432", "must name a database"),
        ("TEMPORAL_ADDRESS", "localhost", "TEMPORAL_ADDRESS"),
        ("OPENAI_BASE_URL", "ftp://model", "OPENAI_BASE_URL"),
        ("AGENTRUN_MAX_CONCURRENT_ACTIVITIES", "0", "AGENTRUN_MAX_CONCURRENT_ACTIVITIES"),
        ("AGENTRUN_TEMPORAL_UI_PORT", "http", "AGENTRUN_TEMPORAL_UI_PORT"),
    ],
)
def test_a_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert needle in str(info.value) and variable in str(info.value)


def test_the_api_key_is_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    settings = load_settings()
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-very-secret"
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert "sk-very-secret" not in text


def test_defaults_point_at_the_embedded_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TEMPORAL_ADDRESS", "AGENTRUN_DATABASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert s.temporal_address == "127.0.0.1:7233"
    assert s.sqlalchemy_url.startswith("postgresql+psycopg://")
    assert s.uses_offline_model


def test_compose_file_matches_the_settings(repo_root: Path) -> None:
    compose = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in (
        "temporal",
        "temporal-postgres",
        "temporal-ui",
        "temporal-admin-tools",
        "temporal-search-attributes",
        "app-postgres",
        "worker",
    ):
        assert name in services, name
    assert "7233:7233" in services["temporal"]["ports"]
    assert "8233:8080" in services["temporal-ui"]["ports"]
    assert services["temporal"]["environment"]["POSTGRES_SEEDS"] == "temporal-postgres"
    command = " ".join(services["temporal-search-attributes"]["command"])
    from agentrun.stack import SEARCH_ATTRIBUTES

    for attr, kind in SEARCH_ATTRIBUTES.items():
        assert f"--name {attr} --type {kind}" in command
    worker = services["worker"]
    assert worker["build"]["dockerfile"] == "Dockerfile"
    assert (repo_root / worker["build"]["dockerfile"]).exists()
    env = worker["environment"]
    known = {_variable_name(f) for f in Settings.model_fields}
    assert set(env) <= known, set(env) - known
    for required in ("TEMPORAL_ADDRESS", "AGENTRUN_DATABASE_URL", "AGENTRUN_TASK_QUEUE"):
        assert required in env
    # The worker's settings load from exactly the compose environment.
    values = {k: str(v) for k, v in env.items() if "${" not in str(v)}
    settings = Settings.model_validate(values)
    assert settings.database_url.endswith("@app-postgres:5432/agentrun")
    assert settings.temporal_address == "temporal:7233"


def test_compose_serves_the_http_api(repo_root: Path) -> None:
    compose = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    api, worker = compose["services"]["api"], compose["services"]["worker"]
    assert api["build"] == worker["build"] and api["command"] == ["agentrun", "serve"]
    env = api["environment"]
    known = {_variable_name(f) for f in Settings.model_fields}
    assert set(env) <= known, set(env) - known
    settings = Settings.model_validate({k: str(v) for k, v in env.items() if "${" not in str(v)})
    assert settings.http_host == "0.0.0.0"
    assert f"{settings.http_port}:{settings.http_port}" in api["ports"]
    assert str(settings.http_port) in " ".join(api["healthcheck"]["test"])
