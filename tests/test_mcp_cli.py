"""`agentrun tools`, `agentrun tools check` and a worker's start with a bad MCP declaration,
as an operator runs them (subprocesses, real servers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.mcp_support import REPO_ROOT, SERVER_MODULE

BROKEN = "import sys; sys.stderr.write('missing API key for broken\\n'); sys.exit(3)"


def write_config(tmp_path: Path, broken: bool) -> Path:
    text = f"""
[mcp.servers.notes]
command = "{sys.executable}"
args = ["-m", "{SERVER_MODULE}"]
cwd = "{REPO_ROOT}"
env = {{ MCP_TEST_LOG = "{tmp_path / "calls.jsonl"}" }}
"""
    if broken:
        text += f"""
[mcp.servers.broken]
command = "{sys.executable}"
args = ["-c", {json.dumps(BROKEN)}]
"""
    path = tmp_path / "agentrun.toml"
    path.write_text(text)
    return path


def agentrun(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "starter.cli", *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_tools_check_reports_what_each_server_offers_or_why_it_failed(tmp_path: Path) -> None:
    config = write_config(tmp_path, broken=True)
    done = agentrun(tmp_path, "tools", "check", "--json", AGENTRUN_CONFIG_FILE=str(config))
    assert done.returncode == 1, done.stderr
    servers = {s["server"]: s for s in json.loads(done.stdout)["servers"]}
    assert servers["notes"]["ok"] and len(servers["notes"]["tools"]) == 4
    broken = servers["broken"]
    assert not broken["ok"] and "MCP server 'broken': cannot start" in broken["error"]
    assert "missing API key for broken" in broken["error"]  # its stderr tail
    # ./agentrun.toml is the default file; with every server up the check passes.
    write_config(tmp_path, broken=False)
    ok = agentrun(tmp_path, "tools", "check")
    assert ok.returncode == 0 and "ok      notes" in ok.stdout and "4 tools" in ok.stdout


def test_tools_lists_built_in_and_mcp_tools_with_their_policies(tmp_path: Path) -> None:
    write_config(tmp_path, broken=False)
    done = agentrun(tmp_path, "tools", "--json")
    assert done.returncode == 0, done.stderr
    tools = {t["name"]: t for t in json.loads(done.stdout)["tools"]}
    assert tools["bash"]["source"] == "built-in" and tools["bash"]["approval"] == "needs_approval"
    lookup, save = tools["notes__lookup"], tools["notes__save_note"]
    assert lookup["source"] == "mcp:notes" and lookup["read_only"]
    assert (lookup["approval"], lookup["approval_allow_safe"]) == ("needs_approval", "auto")
    assert (save["approval"], save["approval_allow_safe"]) == ("needs_approval", "needs_approval")


def test_a_bad_declaration_stops_the_worker_and_the_cli_with_file_key_and_problem(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[mcp.servers.files]\ncommand = "npx"\ntimeout_s = 0\n')
    worker = subprocess.run(
        [sys.executable, "-c", "import worker; worker.main(['--no-migrate'])"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "AGENTRUN_CONFIG_FILE": str(bad)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode != 0
    assert f"{bad}: key `mcp.servers.files.timeout_s`: Input should be greater than 0" in (
        worker.stderr
    )
    cli = agentrun(tmp_path, "tools", "check", AGENTRUN_CONFIG_FILE=str(bad))
    assert cli.returncode == 2 and "mcp.servers.files.timeout_s" in cli.stderr
    # `agentrun dev` refuses it before it starts anything.
    dev = agentrun(
        tmp_path, "dev", AGENTRUN_CONFIG_FILE=str(bad), AGENTRUN_DATA_DIR=str(tmp_path / "d")
    )
    assert dev.returncode == 2 and "mcp.servers.files.timeout_s" in dev.stderr
    assert not (tmp_path / "d").exists()
