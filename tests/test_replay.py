"""Every recorded history under tests/histories/ replays against the current workflow code.

Runs in flight depend on this: a worker upgraded under a run re-executes its workflow code over
the recorded history, and a change that takes another path raises a nondeterminism error and
strands the run. A change that would break one of these needs `workflow.patched` (or a new
workflow type), never an edit of the recording.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from workflows import ALL_WORKFLOWS, SANDBOX_RUNNER, WEBHOOK_WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*/*.json"))


def test_there_are_recorded_histories() -> None:
    assert len(HISTORIES) >= 7, HISTORIES


# The workers' runner (our modules passed through the sandbox) and the SDK's default one (a
# hand-wired worker's), which re-imports them per run: both must replay every history.
RUNNERS = {"worker-runner": SANDBOX_RUNNER, "default-sandbox": SandboxedWorkflowRunner()}


@pytest.mark.parametrize("runner", RUNNERS.values(), ids=list(RUNNERS))
@pytest.mark.parametrize("path", HISTORIES, ids=[f"{p.parent.name}/{p.stem}" for p in HISTORIES])
async def test_history_replays(path: Path, runner: SandboxedWorkflowRunner) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(
        workflows=[*ALL_WORKFLOWS, *WEBHOOK_WORKFLOWS],
        data_converter=pydantic_data_converter,
        workflow_runner=runner,
    )
    await replayer.replay_workflow(history)
