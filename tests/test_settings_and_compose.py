"""Settings validation, and docker-compose.yml checked against the settings (no Docker engine
runs here, so the file is loaded and its services, ports and variable names are checked)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agentrun.settings import Settings, SettingsError, _variable_name, load_settings

# The standard OpenTelemetry variables agentrun.telemetry.tracing reads (not Settings fields).
OTEL_VARIABLES = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_SERVICE_NAME"}


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
    known = {_variable_name(f) for f in Settings.model_fields} | OTEL_VARIABLES
    assert set(env) <= known, set(env) - known
    for required in ("TEMPORAL_ADDRESS", "AGENTRUN_DATABASE_URL", "AGENTRUN_TASK_QUEUE"):
        assert required in env
    # The worker's settings load from exactly the compose environment.
    values = {k: str(v) for k, v in env.items() if "${" not in str(v) and k not in OTEL_VARIABLES}
    settings = Settings.model_validate(values)
    assert settings.database_url.endswith("@app-postgres:5432/agentrun")
    assert settings.temporal_address == "temporal:7233"


def test_compose_serves_the_http_api(repo_root: Path) -> None:
    compose = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    api, worker = compose["services"]["api"], compose["services"]["worker"]
    assert api["build"] == worker["build"] and api["command"] == ["agentrun", "serve"]
    env = api["environment"]
    known = {_variable_name(f) for f in Settings.model_fields} | OTEL_VARIABLES
    assert set(env) <= known, set(env) - known
    settings = Settings.model_validate(
        {k: str(v) for k, v in env.items() if "${" not in str(v) and k not in OTEL_VARIABLES}
    )
    assert settings.http_host == "0.0.0.0"
    assert f"{settings.http_port}:{settings.http_port}" in api["ports"]
    assert str(settings.http_port) in " ".join(api["healthcheck"]["test"])


# -- observability (README "Observability"): Prometheus and Grafana in the compose file ---------


def test_compose_runs_prometheus_scraping_the_workers_and_the_api(repo_root: Path) -> None:
    compose = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    services = compose["services"]
    worker_env = services["worker"]["environment"]
    worker = Settings.model_validate(
        {k: str(v) for k, v in worker_env.items() if "${" not in str(v) and k not in OTEL_VARIABLES}
    )
    assert worker.metrics_port is not None and worker.metrics_host == "0.0.0.0"
    prometheus = services["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"] if v.startswith("./")}
    config_path = repo_root / mounts["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load(config_path.read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    (sd,) = jobs["agentrun-worker"]["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["port"] == worker.metrics_port
    api = Settings.model_validate(
        {
            k: str(v)
            for k, v in services["api"]["environment"].items()
            if "${" not in str(v) and k not in OTEL_VARIABLES
        }
    )
    (static,) = jobs["agentrun-api"]["static_configs"]
    assert static["targets"] == [f"api:{api.http_port}"]
    assert {"worker", "api"} <= set(prometheus["depends_on"])


def test_compose_provisions_grafana_with_a_dashboard_of_metrics_we_export(repo_root: Path) -> None:
    import json
    import re

    from agentrun.telemetry.api_metrics import SSE_FOLLOWERS
    from agentrun.telemetry.metrics import METRIC_NAMES

    compose = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    provisioning = repo_root / mounts["/etc/grafana/provisioning"]
    dashboards = repo_root / mounts["/var/lib/grafana/dashboards"]
    (source,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    (provider,) = yaml.safe_load((provisioning / "dashboards/agentrun.yml").read_text())[
        "providers"
    ]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads((dashboards / "agentrun.json").read_text())
    exported = set(METRIC_NAMES) | {SSE_FOLLOWERS}
    exported |= {f"{n}_{s}" for n in METRIC_NAMES for s in ("bucket", "sum", "count")}
    used = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"]
        for target in panel["targets"]:
            used |= set(re.findall(r"agentrun_[a-z_]+", target["expr"]))
    assert used and used <= exported, used - exported
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("runs", "tokens", "cost", "latency", "approval"):
        assert topic in titles, topic
