"""The run's input and result: the workflow input (StartRunInput, its AgentConfig and client
tools), the limits, the Strict mechanism (tolerant read, strict make) and the run's result."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agentrun.contracts.subagent_names import subagent_problems
from agentrun.contracts.usage import Usage
from agentrun.protocol.statuses import ApprovalPreset, RunStatus, ToolApproval
from agentrun.protocol.webhooks import MAX_URL_CHARS, WebhookEvent, url_problem
from agentrun.text import check_text as _check_text
from agentrun.text import model_name_problem
from agentrun.text import nested_text_problem as _nested_text_problem

if TYPE_CHECKING:
    from agentrun.contracts.carry import RunCarry
    from agentrun.contracts.steps import OpenRunInput

MAX_PROMPT_CHARS = 100_000
# A run's turns at most: a long run continues-as-new (continue_as_new_after_turns) to keep each
# execution's history small, but its record and its event log grow with every turn.
MAX_TURNS_LIMIT = 1_000
DEFAULT_FIRST_TOKEN_TIMEOUT_S = 600.0
RESULT_TEXT_LIMIT = 4_000
MAX_BUDGET_USD = Decimal(10**9)
# The most characters of a tool's result that are recorded and sent to the model: a server
# tool's output is cut there, a client-side result longer than this is refused.
RESULT_CAP = 64_000
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,199}$"
# A tenant's id and an API key's name.
TENANT_PATTERN = r"^[A-Za-z0-9._-]{1,100}$"

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful agent. Use the tools you are given when they help, and answer concisely."
)


class Strict(BaseModel):
    """A payload that outside callers make. Strict where it is made, tolerant where it is read.

    During a rolling deploy a newer client or worker may send a field this code does not know
    yet; the reading side (the data converter's validate_json inside workflows and activities,
    model_validate) ignores it instead of failing the workflow task. Where a payload is *made*
    (the constructor in code, strict_validate at the edges: CLI, client API, HTTP API) an
    unknown field is a mistake and is refused with its name.
    """

    model_config = ConfigDict(extra="ignore")

    def __init__(self, /, **data: Any) -> None:
        __tracebackhide__ = True
        self.__pydantic_validator__.validate_python(data, self_instance=self, extra="forbid")

    # Pydantic calls a model's own __init__ from every validation unless it carries this mark;
    # with it, reading a payload (validate_json, model_validate) stays tolerant.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


StrictModel = TypeVar("StrictModel", bound=BaseModel)


def strict_validate(model: type[StrictModel], data: Any) -> StrictModel:
    """Validate outside input (a parsed JSON object, a dict from a caller) at an edge: every
    rule of `model`, and an unknown field anywhere inside is refused with where it is."""
    return model.model_validate(data, extra="forbid")


class ClientTool(Strict):
    """A tool the caller runs itself: the run waits for its result (update submit_tool_result)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = Field(default="", max_length=4_000)
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON schema of the arguments.",
    )

    @field_validator("description", "parameters")
    @classmethod
    def _storable(cls, value: Any, info: ValidationInfo) -> Any:
        return _check_text(value, info, always=False)


class RunWebhook(Strict):
    """A URL this run's webhook events are also sent to (besides the tenant's webhooks),
    signed with the tenant's secret."""

    url: str = Field(max_length=MAX_URL_CHARS)
    # Names, not the enum: an older worker still decodes a newer client's event name.
    events: list[str] = Field(min_length=1, max_length=8)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        problem = None if info.mode == "json" else url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str], info: ValidationInfo) -> list[str]:
        unknown = [e for e in value if e not in {w.value for w in WebhookEvent}]
        if unknown and info.mode != "json":
            known = ", ".join(w.value for w in WebhookEvent)
            raise ValueError(f"unknown webhook event {unknown[0]!r}; known: {known}")
        return value


class McpServerChoice(Strict):
    """An MCP server (declared on the workers, README "MCP tools") a run may use; `tools`
    narrows it to some of its tools (their names on the server), all of them when unset."""

    server: str = Field(pattern=r"^[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*$", max_length=30)
    tools: list[str] | None = Field(default=None, max_length=256)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"server": data} if isinstance(data, str) else data


class SubAgentSpec(Strict):
    """A named sub-agent (README Sub-agents): the model sees a tool `delegate_to_<name>` taking
    {"task": text}, and a call runs the task as a child run with these settings. Unset fields
    are the parent run's."""

    description: str = Field(default="", max_length=4_000)
    system_prompt: str = Field(default=DEFAULT_SYSTEM_PROMPT, max_length=MAX_PROMPT_CHARS)
    tools: list[str] | None = Field(default=None, description="Unset: the parent's tools.")
    model: str | None = None
    max_turns: int | None = Field(default=None, ge=1, le=MAX_TURNS_LIMIT)
    max_tool_calls: int | None = Field(default=None, ge=0, le=1000)
    approval: ApprovalPreset | None = None
    approval_allow: list[str] | None = None
    approval_overrides: dict[str, ToolApproval] | None = None
    subagents: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Sub-agents (of the same config) this one may delegate to, within max_depth.",
    )
    mcp_servers: list[McpServerChoice] | None = Field(
        default=None, max_length=32, description="Unset: the parent's MCP servers."
    )

    @field_validator("description", "system_prompt")
    @classmethod
    def _storable(cls, value: Any, info: ValidationInfo) -> Any:
        return _check_text(value, info, always=False)

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        problem = None if value is None or info.mode == "json" else model_name_problem(value)
        if problem:
            raise ValueError(f"the model name {problem}")
        return value


class SubRunParent(BaseModel):
    """A child run's link to its parent (set by the parent's workflow, never by a caller)."""

    run_id: str
    tool_call_id: str
    agent: str
    depth: int = Field(default=1, ge=1)


class AgentConfig(Strict):
    """How one run behaves. Everything has a default; a caller sets only what it needs."""

    model: str | None = Field(
        default=None, description="Model name; the worker's AGENTRUN_MODEL when unset."
    )
    system_prompt: str = Field(default=DEFAULT_SYSTEM_PROMPT, max_length=MAX_PROMPT_CHARS)
    tools: list[str] | None = Field(
        default=None, description="Built-in tool names to offer; all of them when unset."
    )
    max_turns: int = Field(default=8, ge=1, le=MAX_TURNS_LIMIT)
    max_tool_calls: int = Field(default=16, ge=0, le=1000)
    context_token_budget: int = Field(default=24_000, ge=256, le=2_000_000)
    context_strategy: Literal["trim", "summarize"] = Field(
        default="trim",
        description="Over the budget: trim drops the oldest messages; summarize has the model "
        "summarise them (README Compaction), trimming only if that fails.",
    )
    summary_model: str | None = Field(
        default=None, description="Model that writes summaries; the run's model when unset."
    )
    summary_keep_share: float = Field(
        default=0.5,
        ge=0.1,
        le=0.9,
        description="Share of the budget kept verbatim (newest messages) when summarising.",
    )
    summary_timeout_s: float = Field(default=120, gt=0, le=3600)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_output_tokens: int | None = Field(default=None, ge=1, le=200_000)
    workspace: str | None = Field(
        default=None, description="Folder the file and shell tools work in."
    )
    flush_interval_ms: int = Field(default=50, ge=0, le=5_000)
    model_timeout_s: float = Field(default=300, gt=0, le=3600)
    model_heartbeat_timeout_s: float = Field(
        default=30,
        gt=0,
        le=600,
        description="Stall timeout: the longest wait between two chunks once the first arrived.",
    )
    model_first_token_timeout_s: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="The longest wait for the first chunk (a reasoning model may think long "
        f"first); at most model_timeout_s. Unset: {DEFAULT_FIRST_TOKEN_TIMEOUT_S:g}s or "
        "model_timeout_s, whichever is less.",
    )
    model_max_attempts: int = Field(default=6, ge=1, le=100)
    tool_heartbeat_timeout_s: float = Field(default=10, ge=2, le=600)
    approval: ApprovalPreset = Field(
        default=ApprovalPreset.TOOL_DEFAULT,
        description="tool_default: each tool's own policy (bash asks); require_all; allow_safe: "
        "read-only built-ins run, the rest ask; allow_listed: only approval_allow runs without "
        "asking; skip_all: nothing asks.",
    )
    approval_allow: list[str] = Field(default_factory=list)
    approval_overrides: dict[str, ToolApproval] = Field(default_factory=dict)
    approval_timeout_s: float | None = Field(
        default=None, gt=0, le=365 * 24 * 3600, description="None: wait as long as it takes."
    )
    approval_timeout_action: Literal["reject", "fail"] = "reject"
    client_tools: list[ClientTool] = Field(default_factory=list, max_length=128)
    webhooks: list[RunWebhook] | None = Field(
        default=None,
        max_length=8,
        description="Extra webhook URLs for this run's events (README Webhooks).",
    )
    max_cost_usd: Decimal | None = Field(
        default=None,
        gt=0,
        le=MAX_BUDGET_USD,
        description="Stop the run (FAILED, BudgetExceeded) once its model calls cost this "
        "many US dollars; checked before every model turn and tool batch (README Cost and "
        'budgets). A decimal string such as "0.50" is exact.',
    )
    max_total_tokens: int | None = Field(
        default=None,
        gt=0,
        le=10**12,
        description="Stop the run once its model calls used this many tokens (prompt + "
        "completion, every attempt).",
    )
    continue_as_new_after_turns: int | None = Field(
        default=100,
        ge=1,
        le=MAX_TURNS_LIMIT,
        description="The run's workflow continues-as-new after this many turns of one "
        "execution (README Long runs); None: only when Temporal suggests it.",
    )
    mcp_servers: list[McpServerChoice] | None = Field(
        default=None,
        max_length=32,
        description="MCP servers (or some of their tools) this run may use (README MCP tools).",
    )
    subagents: dict[str, SubAgentSpec] | None = Field(
        default=None, max_length=16, description="Named sub-agents (README Sub-agents)."
    )
    max_depth: int = Field(default=1, ge=1, le=4, description="Levels of sub-runs below a run.")
    max_fanout: int = Field(default=4, ge=1, le=16, description="Sub-runs of one run at once.")

    @field_validator("system_prompt", "workspace")
    @classmethod
    def _storable(cls, value: Any, info: ValidationInfo) -> Any:
        return _check_text(value, info, always=False)

    @field_validator("model", "summary_model")
    @classmethod
    def _model_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or info.mode == "json":
            return value
        problem = model_name_problem(value)
        if problem:
            raise ValueError(f"the model name {problem}")
        return value

    @model_validator(mode="after")
    def _first_token_within_call(self) -> AgentConfig:
        first = self.model_first_token_timeout_s
        if first is not None and first > self.model_timeout_s:
            raise ValueError(
                f"model_first_token_timeout_s ({first:g}) must not exceed model_timeout_s "
                f"({self.model_timeout_s:g})"
            )
        return self

    @model_validator(mode="after")
    def _mcp_servers_once(self) -> AgentConfig:
        names = [c.server for c in self.mcp_servers or ()]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"mcp_servers names {', '.join(twice)} more than once")
        return self

    @model_validator(mode="after")
    def _subagents_named(self, info: ValidationInfo) -> AgentConfig:
        problems = [] if info.mode == "json" else subagent_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def first_token_timeout_s(self) -> float:
        """The wait for the first chunk that applies."""
        if self.model_first_token_timeout_s is not None:
            return min(self.model_first_token_timeout_s, self.model_timeout_s)
        return min(DEFAULT_FIRST_TOKEN_TIMEOUT_S, self.model_timeout_s)


class StartRunInput(Strict):
    """Input of the agentrun.AgentRun workflow. The workflow id is the run id."""

    run_id: str = Field(pattern=ID_PATTERN)
    session_id: str = Field(pattern=ID_PATTERN)
    prompt: str
    config: AgentConfig = Field(default_factory=AgentConfig)
    tenant: str | None = Field(
        default=None,
        pattern=TENANT_PATTERN,
        description="The tenant the run and its session belong to; None: the default tenant.",
    )
    carry: RunCarry | None = Field(
        default=None,
        description="Set by the run's own continue-as-new only (README Long runs): what its "
        "next execution takes over instead of opening the run again.",
    )
    parent: SubRunParent | None = Field(
        default=None, description="Set on a sub-agent's run by its parent run."
    )

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError("the prompt is empty")
        if len(value) > MAX_PROMPT_CHARS:
            raise ValueError(
                f"the prompt has {len(value)} characters; the limit is {MAX_PROMPT_CHARS}"
            )
        return _check_text(value, info, always=False)  # type: ignore[no-any-return]


def storage_problems(inp: StartRunInput | OpenRunInput) -> list[str]:
    """What in a run's input PostgreSQL cannot store: the worker's check of an input that was
    decoded without the client-side validation (see the module docstring)."""
    problems = []
    config = inp.config
    subs = (config.subagents or {}).items()
    texts: list[tuple[str, Any]] = [
        ("prompt", inp.prompt),
        ("system_prompt", config.system_prompt),
        ("workspace", config.workspace),
        *((f"client tool {c.name} description", c.description) for c in config.client_tools),
        *((f"client tool {c.name} parameters", c.parameters) for c in config.client_tools),
        *(("a webhook url", w.url) for w in config.webhooks or ()),
        *((f"sub-agent {n} text", [s.description, s.system_prompt]) for n, s in subs),
    ]
    for what, value in texts:
        problem = _nested_text_problem(value)
        if problem:
            problems.append(f"{what} {problem}")
    if config.model is not None:
        problem = model_name_problem(config.model)
        if problem:
            problems.append(f"the model name {problem}")
    return problems


class RunResult(BaseModel):
    """The workflow result: small, whatever the length of the conversation."""

    run_id: str
    session_id: str
    status: RunStatus
    final_text: str = ""
    final_text_truncated: bool = False
    usage: Usage = Field(default_factory=Usage)
    error: str | None = None


def preview(text: str, limit: int = RESULT_TEXT_LIMIT) -> tuple[str, bool]:
    """The text cut to `limit` characters, and whether it was cut."""
    return (text, False) if len(text) <= limit else (text[:limit], True)
