"""What the offline model plays: the script types (a Reply, a Fault, random FaultRates) and the
built-in agent that answers when no script matches (tools picked from keywords in the prompt,
then a summary of what they returned)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

FaultKind = Literal["http", "drop", "malformed", "stall"]


@dataclass
class ToolCallSpec:
    name: str
    arguments: dict[str, Any] | str
    id: str | None = None


@dataclass
class Reply:
    """One streamed answer: text, tool calls, or both."""

    text: str = ""
    tool_calls: list[ToolCallSpec] = field(default_factory=list)
    chunk_chars: int = 4
    args_chunk_chars: int = 3
    delay_s: float = 0.0
    first_token_delay_s: float = 0.0
    interleave_tool_calls: bool = True
    # The usage object to report as it is (e.g. with prompt_tokens_details.cached_tokens);
    # None: rough counts made from the request and the reply.
    usage: dict[str, Any] | None = None


@dataclass
class Fault:
    """A failure: an HTTP status (with Retry-After), a drop, a malformed chunk or a stall."""

    kind: FaultKind = "http"
    status: int = 500
    message: str = "scripted failure"
    retry_after_s: float | None = None
    retry_after_ms: int | None = None
    after_chunks: int = 3
    stall_s: float = 60.0
    code: str | None = None


Step = Reply | Fault


@dataclass
class RecordedRequest:
    at: float
    key: str
    body: dict[str, Any]
    outcome: str = ""


@dataclass
class FaultRates:
    """Random faults for load and chaos tests; each a probability per request."""

    http_429: float = 0.0
    http_500: float = 0.0
    drop: float = 0.0
    malformed: float = 0.0
    stall: float = 0.0
    retry_after_s: float = 1.0
    stall_s: float = 60.0
    seed: int = 0


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user" and isinstance(m.get("content"), str):
            return str(m["content"])
    return ""


_ARITH = re.compile(
    r"(?:(?<=\s)|^)(\d+(?:\.\d+)?(?:\s*[-+*/%]\s*\(?\s*\d+(?:\.\d+)?\s*\)?)+)(?![\w.])"
)


def default_agent(body: dict[str, Any]) -> Reply:
    """The built-in offline agent: pick tools from keywords, then sum up their results."""
    messages: list[dict[str, Any]] = body.get("messages") or []
    offered = {t["function"]["name"] for t in body.get("tools") or [] if "function" in t}
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        names = {
            c.get("id"): c.get("function", {}).get("name")
            for m in messages
            for c in m.get("tool_calls") or []
        }
        results = []
        for m in reversed(messages):
            if m.get("role") != "tool":
                break
            name = names.get(m.get("tool_call_id")) or "tool"
            results.append(f"- {name}: {str(m.get('content'))[:300]}")
        results.reverse()
        return Reply(text="Here is what the tools returned:\n" + "\n".join(results) + "\nDone.")
    prompt = _last_user_text(messages)
    lower = prompt.lower()
    calls: list[ToolCallSpec] = []
    if offered:
        if "ls" in offered and re.search(r"\b(list|files|folder|directory|ls)\b", lower):
            calls.append(ToolCallSpec("ls", {"path": "."}))
        if "current_time" in offered and re.search(r"\b(time|date|clock)\b", lower):
            calls.append(ToolCallSpec("current_time", {"timezone": "UTC"}))
        match = _ARITH.search(prompt)
        if "calculator" in offered and match:
            calls.append(ToolCallSpec("calculator", {"expression": match.group(1).strip()}))
        command = re.search(r"`([^`]+)`", prompt)
        if "bash" in offered and command and re.search(r"\b(run|bash|shell)\b", lower):
            calls.append(ToolCallSpec("bash", {"command": command.group(1)}))
        read = re.search(r"\bread\s+([\w./-]+)", prompt)
        if "read_file" in offered and read:
            calls.append(ToolCallSpec("read_file", {"path": read.group(1)}))
    if calls:
        return Reply(text="Let me check that with my tools.", tool_calls=calls)
    return Reply(
        text=(
            "This is agentrun's offline model: the worker has no real model configured, so I "
            f"answer from a script. You said: {prompt[:200]!r}. To talk to a real model, set "
            "OPENAI_BASE_URL, OPENAI_API_KEY and AGENTRUN_MODEL where the worker runs "
            "(`agentrun dev` or `agentrun worker`) and restart it: model settings take effect "
            "in the worker, not in `agentrun run`."
        )
    )
