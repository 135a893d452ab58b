"""The README's interface tables, rendered from the protocol so the two cannot drift.

README.md holds each generated block between marker comments (`<!-- NAME:begin ... -->` and
`<!-- NAME:end -->`); tests/unit/test_readme_interface.py fails when a block differs from what
this module renders. After changing an event, a payload, a name or a status, regenerate:

    python -m agentrun.protocol.docs           # rewrite the blocks in README.md
    python -m agentrun.protocol.docs --check   # exit 1 when README.md is out of date

Not imported by the workflow: it reads the payload models of agentrun.contracts.
"""

from __future__ import annotations

import argparse
import enum
import re
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agentrun.contracts import (
    CancelAnswer,
    CancelRequest,
    RecordedDecision,
    RunStatusView,
    ToolDecision,
    ToolResultSubmission,
)
from agentrun.contracts.subagents import SubRunWaits
from agentrun.protocol.events import event_table
from agentrun.protocol.names import Query, Signal, Update
from agentrun.protocol.queue import IfBusy, MessageState, QueuedState
from agentrun.protocol.statuses import (
    TERMINAL_RUN_STATUSES,
    ApprovalPreset,
    Decision,
    RunStatus,
    ToolCallStatus,
    ToolKind,
    WaitKind,
)

README = Path(__file__).resolve().parents[2] / "README.md"
COMMAND = "python -m agentrun.protocol.docs"


@dataclass(frozen=True)
class Message:
    """One update, signal or query: its payload model and what it answers."""

    name: Update | Signal | Query
    payload: type[BaseModel] | None
    answer: type[BaseModel] | str | None
    about: str


MESSAGES: tuple[Message, ...] = (
    Message(
        Update.DECIDE_TOOL_CALL,
        ToolDecision,
        RecordedDecision,
        "decide a call that waits for approval (`arguments` only with `approve_with_edits`)",
    ),
    Message(
        Signal.TOOL_DECISION,
        ToolDecision,
        None,
        "the same decision, fire and forget; kept until the run waits for that call",
    ),
    Message(
        Update.SUBMIT_TOOL_RESULT,
        ToolResultSubmission,
        '`"accepted"`',
        "the result of a client-side tool call (`result` is any JSON)",
    ),
    Message(
        Update.CANCEL,
        CancelRequest,
        CancelAnswer,
        "cancel the run; answers once the run has stopped",
    ),
    Message(Signal.CANCEL, CancelRequest, None, "cancel, fire and forget"),
    Message(
        Signal.SUBRUN_WAITS,
        SubRunWaits,
        None,
        "a sub-agent's run tells its parent which calls wait for approval (runs send it)",
    ),
    Message(Query.STATUS, None, RunStatusView, "where the run is, what waits, usage so far"),
)

STATUSES: tuple[tuple[type[enum.StrEnum], str], ...] = (
    (RunStatus, "a run (`runs.status`, `run.status` events, `AgentRunStatus`)"),
    (ToolCallStatus, "a tool call (`tool_calls.status`)"),
    (Decision, "a person's decision (`decision` of `decide_tool_call`, `tool.decided`)"),
    (WaitKind, "what a pending call waits for (`kind` in the `status` query's `pending`)"),
    (ToolKind, "where a tool runs"),
    (IfBusy, "a message's policy when its session has an active run (`if_busy`)"),
    (QueuedState, "a queued message (`queued_messages.state`)"),
    (MessageState, "a conversation message (`messages.state`; none: an ordinary one)"),
    (ApprovalPreset, "the agent config's `approval`"),
)


def _kind(name: Update | Signal | Query) -> str:
    return {Update: "update", Signal: "signal", Query: "query"}[type(name)]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _choices(annotation: Any) -> list[str] | None:
    """The allowed values of a Literal or an enum annotation (inside Optional too)."""
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(member.value) for member in annotation]
    if typing.get_origin(annotation) is typing.Literal:
        return [str(value) for value in typing.get_args(annotation)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _choices(arg)
            if found:
                return found
    return None


def _nested(annotation: Any) -> tuple[type[BaseModel], bool] | None:
    """The model of a model-typed field, and whether the field is a list of them."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item, True
    return None


def _field(name: str, annotation: Any) -> str:
    text = f"`{name}`"
    choices = _choices(annotation)
    if choices:
        return text + " (" + " | ".join(f"`{c}`" for c in choices) + ")"
    nested = _nested(annotation)
    if nested:
        model, many = nested
        inner = "{" + ", ".join(_field(n, f.annotation) for n, f in _fields(model)) + "}"
        return f"{text}: " + (f"[{inner}]" if many else inner)
    return text


def _fields(model: type[BaseModel]) -> list[tuple[str, Any]]:
    return list(model.model_fields.items())


def model_fields(model: type[BaseModel], *, answer: bool = False) -> str:
    """A model's fields for a table cell: the required ones, then `optional:` the rest (an
    answer's fields are all there, so they are listed as one)."""
    if answer:
        return ", ".join(_field(n, f.annotation) for n, f in _fields(model))
    required = [_field(n, f.annotation) for n, f in _fields(model) if f.is_required()]
    optional = [_field(n, f.annotation) for n, f in _fields(model) if not f.is_required()]
    text = ", ".join(required)
    if optional:
        text += ("; " if text else "") + "optional: " + ", ".join(optional)
    return text


def message_table() -> str:
    """The updates, signals and queries a run answers, with their payloads and answers."""
    lines = ["| name | kind | payload | answer | meaning |", "|---|---|---|---|---|"]
    for m in MESSAGES:
        payload = f"`{m.payload.__name__}`: {model_fields(m.payload)}" if m.payload else "none"
        if m.answer is None:
            answer = "none (fire and forget)" if isinstance(m.name, Signal) else "none"
        elif isinstance(m.answer, str):
            answer = m.answer
        else:
            answer = f"`{m.answer.__name__}`: {model_fields(m.answer, answer=True)}"
        cells = (f"`{m.name.value}`", _kind(m.name), payload, answer, m.about)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def status_table() -> str:
    """Every status and kind word of the contract."""
    lines = ["| of | values |", "|---|---|"]
    for statuses, about in STATUSES:
        values = ", ".join(f"`{s.value}`" for s in statuses)
        if statuses is RunStatus:
            ends = [s for s in RunStatus if s in TERMINAL_RUN_STATUSES]
            values += "; terminal: " + ", ".join(f"`{s.value}`" for s in ends)
        lines.append(f"| {_cell(about)} | {values} |")
    return "\n".join(lines)


BLOCKS: dict[str, Callable[[], str]] = {
    "messages": message_table,
    "statuses": status_table,
    "events": event_table,
}
_BLOCK = re.compile(
    r"(<!-- (?P<name>[a-z]+):begin[^>]*-->\n)(?P<body>.*?)(<!-- (?P=name):end -->)",
    re.S,
)


def readme_blocks(text: str) -> dict[str, str]:
    """The generated blocks found in a README's text, by name (their bodies, stripped)."""
    return {m["name"]: m["body"].strip() for m in _BLOCK.finditer(text)}


def render_readme(text: str) -> str:
    """The README's text with every generated block rendered afresh."""

    def fill(match: re.Match[str]) -> str:
        render = BLOCKS.get(match["name"])
        if render is None:
            return match.group(0)
        return f"{match.group(1)}{render()}\n{match.group(4)}"

    return _BLOCK.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render README.md's interface tables.")
    parser.add_argument("readme", nargs="?", type=Path, default=README)
    parser.add_argument("--check", action="store_true", help="only say whether it is current")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    missing = sorted(set(BLOCKS) - set(readme_blocks(text)))
    if missing:
        print(f"{args.readme} lacks the block(s) {', '.join(missing)}", file=sys.stderr)
        return 1
    rendered = render_readme(text)
    if rendered == text:
        print(f"{args.readme} is current")
        return 0
    if args.check:
        print(f"{args.readme} is out of date; run `{COMMAND}`", file=sys.stderr)
        return 1
    args.readme.write_text(rendered)
    print(f"rewrote the interface tables in {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
