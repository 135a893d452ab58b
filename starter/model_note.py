"""Model settings take effect in the worker, which calls the model; `agentrun run` only starts a
run. When the shell that runs `agentrun run` names a model endpoint (OPENAI_BASE_URL) or model
(AGENTRUN_MODEL) other than the one the worker recorded for the run (its QUEUED run.status
event carries `model` and `model_endpoint`), say so instead of letting it pass in silence."""

from __future__ import annotations

from agentrun.protocol.events import EventType, RunStatusData, payload
from agentrun.settings import OFFLINE_MODEL_NAME, Settings
from agentrun.store import Repository


def model_mismatch(settings: Settings, queued: RunStatusData) -> str | None:
    """The warning for a run whose worker uses another model or endpoint than this shell's
    settings name; None when they agree, when this shell names none, or when the worker did
    not record its endpoint (an older worker)."""
    mine = settings.model_endpoint
    if mine is None or queued.model_endpoint is None:
        return None
    model = queued.model or "?"
    theirs = queued.model_endpoint
    if queued.model == OFFLINE_MODEL_NAME:
        theirs += " (agentrun's offline model)"
    if mine.rstrip("/") != queued.model_endpoint.rstrip("/"):
        what = f"OPENAI_BASE_URL={mine}"
    elif "model" in settings.model_fields_set and settings.model != queued.model:
        what = f"AGENTRUN_MODEL={settings.model}"
    else:
        return None
    return (
        f"! {what} in this shell is not what the run uses: model settings take effect in the "
        f"worker, which sends this run to {model} at {theirs}. Set them where the worker runs "
        "(`agentrun dev` or `agentrun worker`) and restart it; `--model` picks a model per run"
    )


async def warn_if_model_differs(settings: Settings, repo: Repository, run_id: str) -> None:
    """Print model_mismatch's warning (to stderr) for an opened run, if there is one."""
    from starter.output import err_console

    if settings.model_endpoint is None:
        return
    first = await repo.read_events(run_id, 0, 1)
    if not first or first[0].type != EventType.RUN_STATUS:
        return
    data = payload(first[0].type, first[0].data)
    if isinstance(data, RunStatusData):
        warning = model_mismatch(settings, data)
        if warning:
            err_console.print(warning, style="yellow", markup=False)
