"""The typed errors of agentrun.client, and the one mapping from Temporal's errors to them.

    AgentRunError
    ├── RunNotFound          no run has this id
    ├── RunEnded             the run is over: a used run id started again, or a decision,
    │                        result or signal that came too late (.status when known)
    ├── RunNotStarted        no worker opened the run in time
    ├── SessionBusy          another run of the session has not ended (.active_run_id)
    ├── SessionNotFound      the session is another tenant's (.session_id)
    │   └── SessionDeleted   ... or was deleted
    ├── RunFailed            the run's result is a failure (.error_type)
    │   ├── RunRefused       ... because it was refused at open (bad config, closed id,
    │   │                    another tenant's session); .reason_type says which
    │   └── BudgetExceeded   ... because it reached its own or its session's budget
    └── Refused              the run refused an update and changed nothing (.error_type);
        │                    also a WorkflowUpdateFailedError, so `.cause` is the
        │                    ApplicationError and code written against the SDK keeps working
        ├── UnknownToolCall  no call of the run waits under this id
        ├── WrongWaitKind    a decision for a call that waits for a result, or the reverse
        ├── DecisionRefused  (any other refused decision)
        │   ├── AlreadyDecided, HashMismatch, SchemaMismatch, InvalidDecision
        └── ResultRefused    (any other refused client-side result)
            └── AlreadySubmitted, ResultTooLarge, InvalidResult

The class is chosen by `ApplicationError.type` (agentrun.protocol.names.ErrorType), never by
the message text. A type this code does not know (a newer or older workflow) maps to the
request's base class (DecisionRefused or ResultRefused), so a caller always gets a Refused.
"""

from __future__ import annotations

from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.service import RPCError, RPCStatusCode

from agentrun.protocol.names import ErrorType
from agentrun.store.runs import SessionBusyError, SessionNotFoundError


class AgentRunError(Exception):
    """Base of every error agentrun.client raises on purpose."""


class RunNotFound(AgentRunError, LookupError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run {run_id!r}")
        self.run_id = run_id


class RunEnded(AgentRunError):
    """The run is over. With start=True: its id was started again (a run id is used once)."""

    def __init__(
        self, run_id: str, status: str | None = None, *, start: bool = False, message: str = ""
    ) -> None:
        if not message:
            message = f"run {run_id!r} already ended" + (f" ({status})" if status else "")
            if start:
                message += "; start a new run id"
        super().__init__(message)
        self.run_id = run_id
        self.status = status


class RunNotStarted(AgentRunError):
    """No worker opened the run in time (is one polling its task queue?)."""

    def __init__(self, run_id: str, waited_s: float) -> None:
        super().__init__(f"run {run_id!r} was not opened by a worker within {waited_s:g} s")
        self.run_id = run_id
        self.waited_s = waited_s


class SessionBusy(AgentRunError, SessionBusyError):
    """Another run of the session has not ended: the store's one rule, as the client's error
    (`.session_id`, `.active_run_id`)."""


class SessionNotFound(AgentRunError, SessionNotFoundError):
    """The session belongs to another tenant (`.session_id`): to this tenant it does not
    exist, and its id cannot be used for a new one either."""


class SessionDeleted(SessionNotFound):
    """The session was deleted (agentrun.client.forget): no run starts in it again."""

    def __init__(self, session_id: str) -> None:
        Exception.__init__(
            self, f"session {session_id!r} was deleted; start the run in a new session"
        )
        self.session_id = session_id


class RunFailed(AgentRunError):
    """`error_type`: the failure's ApplicationError type; `reason_type`: the type of the error
    under it when there is one (for RunRefused, why the open refused: SessionBusy,
    SessionNotFound, InvalidConfig, ...)."""

    def __init__(
        self,
        message: str,
        *,
        run_id: str | None = None,
        error_type: str | None = None,
        reason_type: str | None = None,
    ):
        super().__init__(message)
        self.run_id = run_id
        self.error_type = error_type
        self.reason_type = reason_type


class RunRefused(RunFailed):
    pass


class BudgetExceeded(RunFailed):
    """The run reached its own or its session's budget and stopped before another model call
    (the run's budget.exceeded event has the figures)."""


class Refused(AgentRunError, WorkflowUpdateFailedError):
    """The run refused an update; nothing changed. `error_type` is the ApplicationError type
    the workflow raised, `cause` that ApplicationError."""

    def __init__(
        self,
        message: str,
        *,
        error_type: str | None = None,
        run_id: str | None = None,
        cause: BaseException | None = None,
    ) -> None:
        Exception.__init__(self, message)
        self.message = message
        self.error_type = error_type
        self.run_id = run_id
        self.__cause__ = cause


class UnknownToolCall(Refused):
    pass


class WrongWaitKind(Refused):
    pass


class DecisionRefused(Refused):
    pass


class AlreadyDecided(DecisionRefused):
    pass


class HashMismatch(DecisionRefused):
    pass


class SchemaMismatch(DecisionRefused):
    pass


class InvalidDecision(DecisionRefused):
    pass


class ResultRefused(Refused):
    pass


class AlreadySubmitted(ResultRefused):
    pass


class ResultTooLarge(ResultRefused):
    pass


class InvalidResult(ResultRefused):
    pass


REFUSALS: dict[ErrorType, type[Refused]] = {
    ErrorType.UNKNOWN_TOOL_CALL: UnknownToolCall,
    ErrorType.WRONG_WAIT_KIND: WrongWaitKind,
    ErrorType.ALREADY_DECIDED: AlreadyDecided,
    ErrorType.HASH_MISMATCH: HashMismatch,
    ErrorType.SCHEMA_MISMATCH: SchemaMismatch,
    ErrorType.INVALID_DECISION: InvalidDecision,
    ErrorType.ALREADY_SUBMITTED: AlreadySubmitted,
    ErrorType.RESULT_TOO_LARGE: ResultTooLarge,
    ErrorType.INVALID_RESULT: InvalidResult,
}


def _error_type(value: str | None) -> ErrorType | None:
    try:
        return ErrorType(value) if value else None
    except ValueError:
        return None


def error_from(
    exc: BaseException, *, run_id: str | None = None, default: type[Refused] = Refused
) -> BaseException:
    """The typed error for a Temporal error (`exc` itself when there is none): a failed update
    (WorkflowUpdateFailedError) or its ApplicationError becomes the Refused subclass of its
    type, a failed run (WorkflowFailureError) RunRefused or RunFailed, an RPCError NOT_FOUND
    RunNotFound. `default` is the class of a refusal whose type has no class of its own."""
    if isinstance(exc, AgentRunError):
        return exc
    if isinstance(exc, WorkflowFailureError):
        return _run_failure(exc, run_id)
    if isinstance(exc, RPCError):
        if exc.status == RPCStatusCode.NOT_FOUND and run_id is not None:
            return RunNotFound(run_id)
        return exc
    cause: BaseException | None = exc
    if isinstance(exc, WorkflowUpdateFailedError):
        cause = exc.cause
    if not isinstance(cause, ApplicationError):
        return exc
    kind = _error_type(cause.type)
    message = cause.message or str(cause)
    if kind is ErrorType.RUN_ENDED:
        return RunEnded(run_id or "?", message=message)
    cls = REFUSALS.get(kind, default) if kind is not None else default
    return cls(message, error_type=cause.type, run_id=run_id, cause=cause)


def _run_failure(exc: WorkflowFailureError, run_id: str | None) -> BaseException:
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        classes: dict[str | None, type[RunFailed]] = {
            ErrorType.RUN_REFUSED: RunRefused,
            ErrorType.BUDGET_EXCEEDED: BudgetExceeded,
        }
        cls = classes.get(cause.type, RunFailed)
        return cls(
            cause.message or str(cause),
            run_id=run_id,
            error_type=cause.type,
            reason_type=_reason_type(cause),
        )
    if isinstance(cause, CancelledError):
        return RunFailed("cancelled through Temporal", run_id=run_id, error_type="Cancelled")
    return RunFailed(str(cause or exc), run_id=run_id)


def _reason_type(failure: ApplicationError) -> str | None:
    """The type of the first typed error under `failure` (an activity's, through an
    ActivityError when there is one)."""
    inner = failure.cause
    for _ in range(4):
        if inner is None:
            return None
        if isinstance(inner, ApplicationError) and inner.type:
            return inner.type
        inner = inner.cause if hasattr(inner, "cause") else inner.__cause__
    return None
