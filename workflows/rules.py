"""The pure rules of people in the loop: which decision or client result a run can take, and
the calls it waits on. No Temporal, no I/O: the workflow keeps a `Waits` and asks it; unit tests
(tests/unit/test_rules.py) exercise every case without a server.

A refusal carries an `ErrorType` (agentrun.protocol.names): the workflow raises it as the
`ApplicationError.type`, and clients map it to an exception class, never the message text.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import jsonschema

from agentrun.contracts import (
    RESULT_CAP,
    PendingCall,
    RecordedDecision,
    ToolDecision,
    ToolInfo,
    ToolResultSubmission,
)
from agentrun.protocol.names import ErrorType
from agentrun.protocol.statuses import Decision, WaitKind


def arguments_sha256(arguments: str) -> str:
    return hashlib.sha256(arguments.encode()).hexdigest()


def result_text(r: ToolResultSubmission) -> str:
    """A client-side result as it is recorded and sent to the model."""
    return r.result if isinstance(r.result, str) else json.dumps(r.result, ensure_ascii=False)


@dataclass(frozen=True)
class Refusal:
    """Why a decision or a result cannot be taken."""

    type: ErrorType
    message: str


@dataclass
class Wait:
    """A tool call that waits for a person's decision or a caller's result."""

    pending: PendingCall
    info: ToolInfo | None
    decision: ToolDecision | None = None
    result: ToolResultSubmission | None = None
    recorded: RecordedDecision | None = None


@dataclass
class Waits:
    """The calls a run waits on, and how each settled one ended."""

    run_id: str = ""
    open: dict[str, Wait] = field(default_factory=dict)
    settled: dict[str, str] = field(default_factory=dict)

    def add(self, wait: Wait) -> None:
        self.open[wait.pending.tool_call_id] = wait

    def settle(self, wait: Wait, how: str) -> None:
        self.open.pop(wait.pending.tool_call_id, None)
        self.settled[wait.pending.tool_call_id] = how

    def known(self, tool_call_id: str) -> bool:
        return tool_call_id in self.open or tool_call_id in self.settled

    def of_kind(self, kind: WaitKind) -> list[Wait]:
        return [w for w in self.open.values() if w.pending.kind == kind]

    def check_decision(self, d: ToolDecision) -> Refusal | None:
        """Why the decision cannot be taken, or None when it can."""
        call_id = d.tool_call_id
        if call_id in self.settled:
            return Refusal(
                ErrorType.ALREADY_DECIDED,
                f"tool call {call_id!r} was already decided ({self.settled[call_id]})",
            )
        wait = self.open.get(call_id)
        if wait is None:
            return Refusal(
                ErrorType.UNKNOWN_TOOL_CALL,
                f"unknown tool call {call_id!r}: no call of run {self.run_id!r} waits for it",
            )
        if wait.pending.kind != WaitKind.APPROVAL:
            return Refusal(
                ErrorType.WRONG_WAIT_KIND,
                f"tool call {call_id!r} waits for a client-side result (submit_tool_result), "
                "not a decision",
            )
        if wait.decision is not None:
            return Refusal(
                ErrorType.ALREADY_DECIDED,
                f"tool call {call_id!r} was already decided ({wait.decision.decision})",
            )
        if d.arguments_sha256 is not None and d.arguments_sha256 != wait.pending.arguments_sha256:
            return Refusal(
                ErrorType.HASH_MISMATCH,
                f"arguments_sha256 does not match the arguments of {call_id!r} "
                f"(expected {wait.pending.arguments_sha256})",
            )
        return _check_edits(d, wait)

    def check_result(self, r: ToolResultSubmission, *, check_size: bool) -> Refusal | None:
        """Why the client-side result cannot be taken, or None when it can. The size is only
        checked where asked (the update validator): validators do not run on replay, so a
        result accepted before the cap existed still replays."""
        call_id = r.tool_call_id
        wait = self.open.get(call_id)
        if call_id in self.settled or (wait is not None and wait.result is not None):
            return Refusal(
                ErrorType.ALREADY_SUBMITTED, f"tool call {call_id!r} already has its result"
            )
        if wait is None:
            return Refusal(
                ErrorType.UNKNOWN_TOOL_CALL,
                f"unknown tool call {call_id!r}: no call of this run waits for a result",
            )
        if wait.pending.kind != WaitKind.CLIENT_RESULT:
            return Refusal(
                ErrorType.WRONG_WAIT_KIND,
                f"tool call {call_id!r} runs on the server; it waits for a decision",
            )
        if check_size and len(text := result_text(r)) > RESULT_CAP:
            return Refusal(
                ErrorType.RESULT_TOO_LARGE,
                f"the result has {len(text)} characters (as JSON); the limit is {RESULT_CAP}: "
                "return a shorter result, or store a large one elsewhere and return a reference",
            )
        return None


def _check_edits(d: ToolDecision, wait: Wait) -> Refusal | None:
    if d.decision != Decision.APPROVE_WITH_EDITS:
        if d.arguments is not None:
            return Refusal(
                ErrorType.INVALID_DECISION,
                "arguments are only taken with the decision approve_with_edits",
            )
        return None
    if d.arguments is None:
        return Refusal(ErrorType.INVALID_DECISION, "approve_with_edits needs the edited arguments")
    schema = wait.info.parameters if wait.info else {}
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(d.arguments),
        key=lambda e: list(e.path),
    )
    if not errors:
        return None

    def where(e: jsonschema.ValidationError) -> str:
        return ".".join(str(p) for p in e.path) or "arguments"

    return Refusal(
        ErrorType.SCHEMA_MISMATCH,
        f"edited arguments do not fit {wait.pending.name}'s schema: "
        + "; ".join(f"{where(e)}: {e.message}" for e in errors[:5]),
    )


def early_approval_refusal(d: ToolDecision) -> Refusal | None:
    """An approval sent (by signal) before its call existed: nobody could have seen the
    arguments, so only their hash binds it to the call a person meant."""
    if d.decision != Decision.REJECT and d.arguments_sha256 is None:
        return Refusal(
            ErrorType.HASH_MISMATCH,
            f"an approval sent before tool call {d.tool_call_id!r} existed must carry its "
            "arguments_sha256 (from tool.approval_requested); decide again now that it waits",
        )
    return None
