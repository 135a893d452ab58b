"""One settings class, read from the environment and `.env`.

Every field is named after the environment variable that sets it, so an error message can name
the variable a person has to fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from agentrun.pricing import ModelPrice, parse_prices

DEFAULT_DATABASE_PORT = 55432
DEFAULT_DATABASE_URL = f"postgresql://postgres@127.0.0.1:{DEFAULT_DATABASE_PORT}/agentrun"
OFFLINE_MODEL_NAME = "offline-scripted"


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class SettingsError(Exception):
    """A setting has a bad value; the message names the environment variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
    )

    temporal_address: Annotated[str, Field(validation_alias=_env("TEMPORAL_ADDRESS"))] = (
        "127.0.0.1:7233"
    )
    temporal_namespace: Annotated[str, Field(validation_alias=_env("TEMPORAL_NAMESPACE"))] = (
        "default"
    )
    temporal_ui_port: Annotated[
        int, Field(validation_alias=_env("AGENTRUN_TEMPORAL_UI_PORT"), ge=1, le=65535)
    ] = 8233
    task_queue: Annotated[
        str, Field(validation_alias=_env("AGENTRUN_TASK_QUEUE"), min_length=1)
    ] = "agentrun"
    database_url: Annotated[str, Field(validation_alias=_env("AGENTRUN_DATABASE_URL"))] = (
        DEFAULT_DATABASE_URL
    )
    openai_base_url: Annotated[str | None, Field(validation_alias=_env("OPENAI_BASE_URL"))] = None
    openai_api_key: Annotated[SecretStr | None, Field(validation_alias=_env("OPENAI_API_KEY"))] = (
        None
    )
    # Model settings take effect in the worker (it calls the model); a client's only say is a
    # run's `model` in its config. With OPENAI_BASE_URL set, AGENTRUN_MODEL must be set too.
    model: Annotated[str, Field(validation_alias=_env("AGENTRUN_MODEL"), min_length=1)] = (
        OFFLINE_MODEL_NAME
    )
    offline_tokens_per_second: Annotated[
        float | None,
        Field(validation_alias=_env("AGENTRUN_OFFLINE_TOKENS_PER_SECOND"), gt=0, le=100_000),
    ] = None
    data_dir: Annotated[Path, Field(validation_alias=_env("AGENTRUN_DATA_DIR"))] = Path(".agentrun")
    max_concurrent_activities: Annotated[
        int, Field(validation_alias=_env("AGENTRUN_MAX_CONCURRENT_ACTIVITIES"), ge=1, le=10_000)
    ] = 100
    max_concurrent_workflow_tasks: Annotated[
        int,
        Field(validation_alias=_env("AGENTRUN_MAX_CONCURRENT_WORKFLOW_TASKS"), ge=1, le=10_000),
    ] = 100

    # Worker Versioning (README "Upgrading workers"): workers run as a Worker Deployment and
    # every run stays pinned to the build it started on.
    worker_versioning: Annotated[
        bool, Field(validation_alias=_env("AGENTRUN_WORKER_VERSIONING"))
    ] = True
    deployment_name: Annotated[
        str,
        Field(
            validation_alias=_env("AGENTRUN_DEPLOYMENT_NAME"),
            pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$",
        ),
    ] = "agentrun"
    build_id: Annotated[
        str | None,
        Field(
            validation_alias=_env("AGENTRUN_BUILD_ID"),
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$",
        ),
    ] = None
    set_current_version: Annotated[
        Literal["auto", "always", "never"],
        Field(validation_alias=_env("AGENTRUN_SET_CURRENT_VERSION")),
    ] = "auto"
    # Payload encryption (README "Payload encryption"): "id:base64key,..."; the first key
    # encrypts, every key decrypts.
    payload_keys: Annotated[
        SecretStr | None, Field(validation_alias=_env("AGENTRUN_PAYLOAD_KEYS"))
    ] = None
    codec_server_host: Annotated[
        str, Field(validation_alias=_env("AGENTRUN_CODEC_SERVER_HOST"), min_length=1)
    ] = "127.0.0.1"
    codec_server_port: Annotated[
        int, Field(validation_alias=_env("AGENTRUN_CODEC_SERVER_PORT"), ge=1, le=65535)
    ] = 8081
    codec_server_token: Annotated[
        SecretStr | None, Field(validation_alias=_env("AGENTRUN_CODEC_SERVER_TOKEN"))
    ] = None
    codec_server_cors_origins: Annotated[
        str, Field(validation_alias=_env("AGENTRUN_CODEC_SERVER_CORS_ORIGINS"))
    ] = "http://localhost:8233,http://127.0.0.1:8233"
    # The HTTP API (`agentrun serve`, README "HTTP API").
    http_host: Annotated[str, Field(validation_alias=_env("AGENTRUN_HTTP_HOST"), min_length=1)] = (
        "127.0.0.1"
    )
    http_port: Annotated[
        int, Field(validation_alias=_env("AGENTRUN_HTTP_PORT"), ge=1, le=65535)
    ] = 8780
    http_max_body_bytes: Annotated[
        int, Field(validation_alias=_env("AGENTRUN_HTTP_MAX_BODY_BYTES"), ge=1024, le=64 << 20)
    ] = 1 << 20
    http_heartbeat_s: Annotated[
        float, Field(validation_alias=_env("AGENTRUN_HTTP_HEARTBEAT_S"), gt=0, le=3600)
    ] = 15.0
    # Observability (README "Observability"); OTEL_* are read by agentrun.telemetry.tracing.
    metrics_port: Annotated[
        int | None, Field(validation_alias=_env("AGENTRUN_METRICS_PORT"), ge=1, le=65535)
    ] = None
    metrics_host: Annotated[
        str, Field(validation_alias=_env("AGENTRUN_METRICS_HOST"), min_length=1)
    ] = "127.0.0.1"
    otel_capture_content: Annotated[
        bool, Field(validation_alias=_env("AGENTRUN_OTEL_CAPTURE_CONTENT"))
    ] = False

    @field_validator("payload_keys")
    @classmethod
    def _payload_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        from agentrun.codec import parse_keys

        parse_keys(value.get_secret_value())  # raises ValueError without echoing a key
        return value

    @model_validator(mode="after")
    def _otel_variables(self) -> Settings:
        from agentrun.telemetry.tracing import check_env

        check_env()  # the OTEL_* values agentrun acts on: a bad one stops start-up as ours do
        return self

    @field_validator("build_id", "metrics_port", mode="before")
    @classmethod
    def _empty_build_id(cls, value: object) -> object:
        return None if value == "" else value

    db_retry_s: Annotated[
        float,
        Field(
            validation_alias=_env("AGENTRUN_DB_RETRY_S"),
            ge=0,
            le=24 * 3600,
            description="How long an activity waits out an unreachable database before it "
            "fails its attempt; a model turn spends no model attempt on the wait.",
        ),
    ] = 120.0
    # -- tools: policy floors, workspaces, the sandbox (a run's config can only tighten these)
    approval_floor: Annotated[
        dict[str, Literal["auto", "needs_approval"]],
        Field(validation_alias=_env("AGENTRUN_APPROVAL_FLOOR")),
    ] = Field(default_factory=dict)
    workspace_root: Annotated[
        Path | None, Field(validation_alias=_env("AGENTRUN_WORKSPACE_ROOT"))
    ] = None
    tool_sandbox: Annotated[
        Literal["auto", "required", "off"], Field(validation_alias=_env("AGENTRUN_TOOL_SANDBOX"))
    ] = "auto"
    tool_network: Annotated[bool, Field(validation_alias=_env("AGENTRUN_TOOL_NETWORK"))] = False
    tool_user: Annotated[str, Field(validation_alias=_env("AGENTRUN_TOOL_USER"), min_length=1)] = (
        "agentrun-tool"
    )
    tool_cpu_s: Annotated[int, Field(validation_alias=_env("AGENTRUN_TOOL_CPU_S"), ge=1)] = 300
    tool_memory_mb: Annotated[
        int, Field(validation_alias=_env("AGENTRUN_TOOL_MEMORY_MB"), ge=64)
    ] = 4096
    tool_file_mb: Annotated[int, Field(validation_alias=_env("AGENTRUN_TOOL_FILE_MB"), ge=1)] = 1024
    tool_max_procs: Annotated[
        int, Field(validation_alias=_env("AGENTRUN_TOOL_MAX_PROCS"), ge=1)
    ] = 512
    tool_env_allow: Annotated[
        list[str], NoDecode, Field(validation_alias=_env("AGENTRUN_TOOL_ENV_ALLOW"))
    ] = Field(default_factory=list)
    secret_env: Annotated[
        list[str], NoDecode, Field(validation_alias=_env("AGENTRUN_SECRET_ENV"))
    ] = Field(default_factory=list)

    # Webhooks (README "Webhooks"): a tenant's URL may not point at loopback, private or
    # link-local addresses unless this is set (a test, or a receiver on the workers' network).
    webhook_allow_private: Annotated[
        bool, Field(validation_alias=_env("AGENTRUN_WEBHOOK_ALLOW_PRIVATE"))
    ] = False
    # MCP servers (README "MCP tools"): the settings file with [mcp.servers.NAME] tables
    # (unset: ./agentrun.toml when there is one) and the same tables as JSON.
    config_file: Annotated[Path | None, Field(validation_alias=_env("AGENTRUN_CONFIG_FILE"))] = None
    mcp_servers: Annotated[
        str | None, NoDecode, Field(validation_alias=_env("AGENTRUN_MCP_SERVERS"))
    ] = None

    # Cost (README "Cost and budgets"): model -> dollars per million tokens, over genai-prices.
    prices: Annotated[
        dict[str, ModelPrice], NoDecode, Field(validation_alias=_env("AGENTRUN_PRICES"))
    ] = Field(default_factory=dict)

    @field_validator("prices", mode="before")
    @classmethod
    def _prices(cls, value: object) -> object:
        return parse_prices(value)

    # Retention (README "Deleting sessions"): sessions idle longer than this many days are
    # deleted by a Temporal schedule the workers keep in step with it; unset: no retention.
    session_retention_days: Annotated[
        float | None, Field(gt=0, validation_alias=_env("AGENTRUN_SESSION_RETENTION_DAYS"))
    ] = None
    session_retention_batch: Annotated[
        int, Field(ge=1, le=10_000, validation_alias=_env("AGENTRUN_SESSION_RETENTION_BATCH"))
    ] = 100
    # Webhook deliveries that ended (delivered or failed) are deleted this many days after they
    # were created, by the same schedule; 0: kept for ever.
    webhook_delivery_retention_days: Annotated[
        float, Field(ge=0, validation_alias=_env("AGENTRUN_WEBHOOK_DELIVERY_RETENTION_DAYS"))
    ] = 14

    @field_validator("approval_floor", mode="before")
    @classmethod
    def _floor_json(cls, value: object) -> object:
        # pydantic-settings already decodes JSON from the environment; a .env or an override
        # may still hand over the raw text.
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("tool_env_allow", "secret_env", mode="before")
    @classmethod
    def _name_list(cls, value: object) -> object:
        # A comma-separated list reads better in an environment than JSON; both are taken.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [n.strip() for n in text.split(",") if n.strip()]
        return value

    @field_validator("temporal_address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port such as 127.0.0.1:7233, got {value!r}")
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"postgresql", "postgres", "postgresql+psycopg"}:
            raise ValueError(
                f"expected a postgresql:// URL such as {DEFAULT_DATABASE_URL}, got scheme "
                f"{parts.scheme!r}"
            )
        if not parts.path.strip("/"):
            raise ValueError("the URL must name a database, e.g. .../agentrun")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ValueError(f"bad port in {value!r}") from exc
        return value

    @field_validator("openai_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(f"expected an http(s):// URL, got {value!r}")
        return value

    @field_validator("offline_tokens_per_second", mode="before")
    @classmethod
    def _empty_rate(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="before")
    @classmethod
    def _empty_model_is_unset(cls, data: object) -> object:
        # docker-compose passes `AGENTRUN_MODEL: ${AGENTRUN_MODEL:-}`: empty means not set.
        if isinstance(data, dict):
            data = {
                k: v
                for k, v in data.items()
                if not (str(k).lower() in ("model", "agentrun_model") and v == "")
            }
        return data

    @model_validator(mode="after")
    def _model_for_an_endpoint(self) -> Settings:
        # The default name only means something to the offline model: sent to a real endpoint
        # it fails every turn with a 404 far from where the setting is missing.
        if self.openai_base_url is not None and "model" not in self.model_fields_set:
            raise ValueError(
                f"AGENTRUN_MODEL: required when OPENAI_BASE_URL is set ({self.model_endpoint}): "
                "the name of the model to ask that endpoint for, e.g. AGENTRUN_MODEL=gpt-4o-mini"
            )
        return self

    @property
    def model_endpoint(self) -> str | None:
        """OPENAI_BASE_URL as it may be shown or recorded: no password, no query string (some
        gateways take a key there); None for the offline model."""
        if self.openai_base_url is None:
            return None
        parts = urlsplit(redact_url(self.openai_base_url))
        return parts._replace(query="", fragment="").geturl()

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the psycopg 3 driver named, as SQLAlchemy wants it."""
        parts = urlsplit(self.database_url)
        return parts._replace(scheme="postgresql+psycopg").geturl()

    @property
    def libpq_url(self) -> str:
        """The database URL as libpq (psycopg.connect) wants it."""
        parts = urlsplit(self.database_url)
        return parts._replace(scheme="postgresql").geturl()

    @property
    def database_url_display(self) -> str:
        """The database URL as it may be shown or logged: any password replaced by ***."""
        return redact_url(self.database_url)

    @property
    def tool_workspace_root(self) -> Path:
        """The folder every tool workspace must lie in; each session gets its own under it."""
        root = self.workspace_root or Path(self.data_dir) / "workspace"
        return root.resolve()

    @property
    def uses_offline_model(self) -> bool:
        return self.openai_base_url is None

    @property
    def temporal_host_port(self) -> tuple[str, int]:
        host, _, port = self.temporal_address.rpartition(":")
        return host, int(port)

    @property
    def cors_origins(self) -> list[str]:
        return [
            o.strip().rstrip("/") for o in self.codec_server_cors_origins.split(",") if o.strip()
        ]

    @property
    def database_host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.database_url)
        return parts.hostname or "127.0.0.1", parts.port or 5432


def redact_url(url: str) -> str:
    """`url` with the password of its user-info part replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def _variable_name(field: str) -> str:
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return field.upper()


def load_settings(**overrides: object) -> Settings:
    """Read the settings; a bad value raises SettingsError naming the variable to fix."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            if not err["loc"]:  # a rule over several settings names its variable itself
                lines.append(err["msg"].removeprefix("Value error, "))
                continue
            field = str(err["loc"][0])
            lines.append(f"{_variable_name(field)}: {err['msg']}")
        raise SettingsError("invalid setting " + "; ".join(lines)) from None
