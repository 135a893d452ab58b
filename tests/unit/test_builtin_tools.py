"""The file tools say which workspace they looked in, so an empty answer is never a riddle."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.tools import LsArgs, ReadFileArgs, ToolContext, ToolError, ls, read_file


def _ctx(workspace: Path) -> ToolContext:
    return ToolContext(run_id="run-1", tool_call_id="call_1", workspace=workspace)


def test_ls_names_the_folder_it_lists(tmp_path: Path) -> None:
    assert ls(LsArgs(), _ctx(tmp_path)).splitlines() == [f"{tmp_path}:", "(empty folder)"]
    (tmp_path / "notes.txt").write_text("hi")
    assert ls(LsArgs(), _ctx(tmp_path)).splitlines() == [f"{tmp_path}:", "notes.txt\t2"]


def test_missing_files_name_the_workspace(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match=str(tmp_path)):
        read_file(ReadFileArgs(path="nope.txt"), _ctx(tmp_path))
    with pytest.raises(ToolError, match=str(tmp_path)):
        ls(LsArgs(path="nope"), _ctx(tmp_path))
