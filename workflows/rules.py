"""The pure rules of a run: which decision or client result it can take, the calls it waits on,
which calls of a batch run (enabled tools, the tool-call budget), what a call that is not run
records instead, and the texts the Web UI shows. No Temporal calls, no I/O: the workflow keeps a
`Waits` and asks these; unit tests (tests/unit/test_rules.py) exercise every case without a
server.

A refusal carries an `ErrorType` (agentrun.protocol.names): the workflow raises it as the
`ApplicationError.type`, and clients map it to an exception class, never the message text.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

import jsonschema
from temporalio.exceptions import ActivityError

from agentrun.contracts import (
    RESULT_CAP,
    OutcomeKind,
    PendingCall,
    RecordedDecision,
    ToolCallRequest,
    ToolDecision,
    ToolInfo,
    ToolResultSubmission,
)
from agentrun.protocol.events import arguments_sha256
from agentrun.protocol.names import ErrorType
from agentrun.protocol.statuses import Decision, ToolApproval, ToolKind, WaitKind

DETAILS_MAX_CHARS = 200


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


# -- a batch of tool calls -------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """The result recorded for a call that is not run (or whose run failed for good)."""

    kind: OutcomeKind
    text: str
    is_error: bool = True


def plan_batch(
    calls: Iterable[ToolCallRequest], enabled: Collection[str], limit: int, used: int
) -> tuple[list[Outcome | None], int]:
    """For each call, why it is not run (the outcome to record instead), or None to run it;
    and the tool calls used after the batch. A tool the run did not enable is never run nor
    offered for approval, whatever the model asks: its name may come from a prompt injection.
    It spends none of the budget."""
    budget = max(0, limit - used)
    names = ", ".join(sorted(enabled)) or "none"
    plan: list[Outcome | None] = []
    for call in calls:
        if call.name not in enabled:
            plan.append(
                Outcome(
                    OutcomeKind.NOT_ENABLED,
                    f"error: tool {call.name!r} is not enabled for this run; "
                    f"enabled tools: {names}",
                )
            )
        elif budget > 0:
            plan.append(None)
            budget -= 1
            used += 1
        else:
            plan.append(
                Outcome(
                    OutcomeKind.OVER_BUDGET,
                    f"error: not run: the run's limit of {limit} tool calls was reached",
                )
            )
    return plan, used


def wait_kind(info: ToolInfo | None) -> WaitKind | None:
    """What a call of this tool waits for before it runs, if anything."""
    if info is None:
        return None
    if info.kind == ToolKind.CLIENT:
        return WaitKind.CLIENT_RESULT
    return WaitKind.APPROVAL if info.approval == ToolApproval.NEEDS_APPROVAL else None


def pending_call(call: ToolCallRequest, kind: WaitKind, turn: int) -> PendingCall:
    return PendingCall(
        tool_call_id=call.id,
        name=call.name,
        kind=kind,
        arguments=call.arguments,
        arguments_sha256=arguments_sha256(call.arguments),
        turn=turn,
    )


def timeout_rejection(call_id: str) -> ToolDecision:
    """The decision an approval that timed out (approval_timeout_action reject) stands for."""
    return ToolDecision(
        tool_call_id=call_id,
        decision=Decision.REJECT,
        decided_by="timeout",
        reason="approval timed out",
    )


def decided_arguments(decision: ToolDecision, call: ToolCallRequest) -> str:
    """The arguments the call runs with: the edited ones, or the model's."""
    if decision.decision == Decision.APPROVE_WITH_EDITS and decision.arguments is not None:
        return json.dumps(decision.arguments, ensure_ascii=False)
    return call.arguments


def rejected(recorded: RecordedDecision) -> Outcome:
    reason = f": {recorded.reason}" if recorded.reason else ""
    return Outcome(
        OutcomeKind.REJECTED,
        f"error: the call was rejected by {recorded.decided_by}{reason}",
    )


def client_result(submission: ToolResultSubmission | None, timeout_s: float | None) -> Outcome:
    if submission is None:
        return Outcome(
            OutcomeKind.NO_CLIENT_RESULT,
            f"error: no result from the client within {timeout_s:g}s",
        )
    return Outcome(OutcomeKind.CLIENT_RESULT, result_text(submission), submission.is_error)


def failed(call: ToolCallRequest, err: BaseException) -> Outcome:
    return Outcome(OutcomeKind.FAILED, f"error: {call.name} failed: {error_message(err)}")


def abandoned(why: str) -> Outcome:
    return Outcome(OutcomeKind.ABANDONED, f"cancelled: {why}")


def error_message(err: BaseException) -> str:
    """An activity failure's own message (its cause's), not the wrapper's."""
    cause = err.__cause__ if isinstance(err, ActivityError) and err.__cause__ else err
    return getattr(cause, "message", None) or str(cause)


# -- what the Web UI shows -------------------------------------------------------------------


def describe(call: ToolCallRequest | PendingCall) -> str:
    """`bash \\`ls -la\\`` for a shell command, `name {args}` for the rest, kept short."""
    try:
        args = json.loads(call.arguments or "{}")
    except ValueError:
        args = None
    if call.name == "bash" and isinstance(args, dict) and isinstance(args.get("command"), str):
        text = f"bash `{args['command']}`"
    else:
        text = f"{call.name} {call.arguments}"
    if len(text) <= DETAILS_MAX_CHARS:
        return text
    return text[: DETAILS_MAX_CHARS - 3] + "..."


def waits_details(waits: Iterable[Wait]) -> str:
    """One line per call the run waits on: approvals first, then client results."""
    waits = list(waits)
    approvals = [w for w in waits if w.pending.kind == WaitKind.APPROVAL]
    results = [w for w in waits if w.pending.kind == WaitKind.CLIENT_RESULT]
    return "\n".join(
        ["waiting for approval: " + describe(w.pending) for w in approvals]
        + ["waiting for client result: " + describe(w.pending) for w in results]
    )
