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

from workflows import ALL_WORKFLOWS, WEBHOOK_WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*/*.json"))


def test_there_are_recorded_histories() -> None:
    assert len(HISTORIES) >= 7, HISTORIES


@pytest.mark.parametrize("path", HISTORIES, ids=[f"{p.parent.name}/{p.stem}" for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(
        workflows=[*ALL_WORKFLOWS, *WEBHOOK_WORKFLOWS], data_converter=pydantic_data_converter
    )
    await replayer.replay_workflow(history)
