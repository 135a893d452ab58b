"""Run bookkeeping activities: open a run, move its status forward."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.tools import ToolRegistry
from agentrun.contracts import (
    PrepareRunInput,
    RunResult,
    SetStatusInput,
    StartRunSetup,
    Usage,
    preview,
)
from agentrun.db.models import RunStatus
from agentrun.db.repository import Repository, SessionBusyError
from agentrun.settings import Settings


class RunActivities:
    def __init__(self, repo: Repository, settings: Settings, registry: ToolRegistry) -> None:
        self.repo = repo
        self.settings = settings
        self.registry = registry

    @activity.defn(name="agentrun.prepare_run")
    async def prepare_run(self, inp: PrepareRunInput) -> StartRunSetup:
        try:
            tools = self.registry.select(inp.config.tools)
        except ValueError as exc:
            raise ApplicationError(str(exc), type="InvalidConfig", non_retryable=True) from exc
        model = inp.config.model or self.settings.model
        try:
            run = await self.repo.open_run(
                run_id=inp.run_id,
                session_id=inp.session_id,
                model=model,
                config=inp.config.model_dump(mode="json"),
                prompt=inp.prompt,
            )
        except SessionBusyError as exc:
            raise ApplicationError(str(exc), type="SessionBusy", non_retryable=True) from exc
        except ValueError as exc:
            raise ApplicationError(str(exc), type="InvalidInput", non_retryable=True) from exc
        return StartRunSetup(run_id=run.id, model=run.model, tools=[t.info() for t in tools])

    @activity.defn(name="agentrun.set_status")
    async def set_status(self, inp: SetStatusInput) -> RunResult:
        status = RunStatus(inp.status)
        final_text = None
        if status == RunStatus.DONE:
            final_text = await self.repo.final_assistant_text(inp.run_id)
        run, _ = await self.repo.set_run_status(
            inp.run_id, status, error=inp.error, final_text=final_text
        )
        text, cut = preview(run.final_text or "")
        return RunResult(
            run_id=run.id,
            session_id=run.session_id,
            status=run.status,
            final_text=text,
            final_text_truncated=cut,
            error=run.error,
            usage=Usage(
                prompt_tokens=run.prompt_tokens,
                completion_tokens=run.completion_tokens,
                llm_calls=run.llm_call_count,
                tool_calls=run.tool_call_count,
                turns=run.turns,
            ),
        )
