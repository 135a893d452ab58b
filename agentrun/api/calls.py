"""/v1/runs/{id}/tool-calls/{tool_call_id}/decision and .../result: through the run's updates
(agentrun.client.decide and submit_tool_result), so the caller gets the recorded answer or the
run's precise refusal. Refusals are mapped by their class (the workflow's error type), never by
their message: 404 unknown call, 409 already decided or submitted, or the run ended, or the
call waits for the other kind of answer; 422 a hash mismatch or arguments or a result the run
will not take."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from agentrun.api.auth import KeyInfo, require
from agentrun.api.lookups import owned_run, services
from agentrun.api.problems import ApiProblem, invalid_body, not_found
from agentrun.client import (
    AlreadyDecided,
    AlreadySubmitted,
    Refused,
    RunEnded,
    RunNotFound,
    UnknownToolCall,
    WrongWaitKind,
    decide,
    submit_tool_result,
)
from agentrun.protocol.http import DecisionRequest, DecisionView, ToolResultRequest, ToolResultView
from agentrun.protocol.statuses import Scope

router = APIRouter(prefix="/v1", tags=["tool calls"])

_REFUSALS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No run, or no call of the run waits under this id."},
    409: {"description": "Already decided (or submitted), the run ended, or wrong kind."},
    422: {"description": "Hash mismatch, arguments or result the run will not take."},
}


def _refusal(exc: Exception, run_id: str, tool_call_id: str) -> ApiProblem:
    extra: dict[str, Any] = {"run_id": run_id, "tool_call_id": tool_call_id}
    if isinstance(exc, RunNotFound):
        return not_found("run", run_id)
    if isinstance(exc, UnknownToolCall):
        return ApiProblem(404, str(exc), kind="unknown-tool-call", **extra)
    if isinstance(exc, RunEnded):
        return ApiProblem(409, str(exc), kind="run-ended", run_status=exc.status, **extra)
    if isinstance(exc, AlreadyDecided | AlreadySubmitted):
        return ApiProblem(409, str(exc), kind="already-answered", **extra)
    if isinstance(exc, WrongWaitKind):
        return ApiProblem(409, str(exc), kind="wrong-wait-kind", **extra)
    assert isinstance(exc, Refused)
    kind = (exc.error_type or "refused").lower()
    return ApiProblem(422, str(exc), kind=kind, error_type=exc.error_type, **extra)


@router.post(
    "/runs/{run_id}/tool-calls/{tool_call_id}/decision",
    response_model=DecisionView,
    responses=_REFUSALS,
)
async def decision(
    request: Request,
    run_id: str,
    tool_call_id: str,
    body: DecisionRequest,
    key: Annotated[KeyInfo, Depends(require(Scope.APPROVE))],
) -> DecisionView:
    svc = services(request)
    await owned_run(svc, run_id, key.tenant)
    try:
        recorded = await decide(
            svc.temporal,
            run_id,
            tool_call_id,
            body.decision,
            arguments=body.arguments,
            arguments_sha256=body.arguments_sha256,
            decided_by=key.name,
            reason=body.reason,
        )
    except ValidationError as exc:
        raise invalid_body(list(exc.errors())) from None
    except (Refused, RunEnded, RunNotFound) as exc:
        raise _refusal(exc, run_id, tool_call_id) from None
    return DecisionView.model_validate(recorded.model_dump(mode="json"))


@router.post(
    "/runs/{run_id}/tool-calls/{tool_call_id}/result",
    response_model=ToolResultView,
    responses=_REFUSALS,
)
async def result(
    request: Request,
    run_id: str,
    tool_call_id: str,
    body: ToolResultRequest,
    key: Annotated[KeyInfo, Depends(require(Scope.WRITE))],
) -> ToolResultView:
    svc = services(request)
    await owned_run(svc, run_id, key.tenant)
    try:
        accepted = await submit_tool_result(
            svc.temporal, run_id, tool_call_id, body.result, is_error=body.is_error
        )
    except ValidationError as exc:
        raise invalid_body(list(exc.errors())) from None
    except (Refused, RunEnded, RunNotFound) as exc:
        raise _refusal(exc, run_id, tool_call_id) from None
    return ToolResultView(tool_call_id=tool_call_id, status=accepted)
