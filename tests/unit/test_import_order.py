"""Each entry point imports on its own, first, in a fresh interpreter: an import cycle (say an
activity importing the client package, which imports the workflows, which import the activity)
only shows when the cycle's first module is the one imported first, which the test run's own
import order can hide."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINTS = [
    "workflows",
    "workflows.agent",
    "activities.runs",
    "activities.model",
    "activities.tool_exec",
    "agentrun.client",
    "agentrun.api.app",
    "worker",
    "starter.cli",
]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_the_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
