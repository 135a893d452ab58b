"""`agentrun dev` from nothing: Temporal (with the Web UI and the search attributes) and
PostgreSQL come up, a second start reuses them, a taken port is reported, and Ctrl-C stops
every process it started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentrun.stack import SEARCH_ATTRIBUTES, free_port, port_in_use, temporal_cli_path


def _agentrun(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from starter.cli import main; main()", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _read_until(proc: subprocess.Popen[str], needle: str, timeout: float = 120) -> str:
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if needle in line:
            return "".join(seen)
    raise AssertionError(f"{needle!r} not seen; output:\n{''.join(seen)}")


@pytest.fixture
def dev_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "AGENTRUN_TEMPORAL_UI_PORT": str(free_port()),
        "AGENTRUN_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/agentrun",
        "AGENTRUN_DATA_DIR": str(tmp_path / "data"),
        "AGENTRUN_TASK_QUEUE": f"dev-{tmp_path.name}",
        "AGENTRUN_HTTP_PORT": str(free_port()),
        "COLUMNS": "200",
    }
    env.pop("OPENAI_BASE_URL", None)
    yield env


def test_agentrun_dev_brings_up_reuses_and_stops_the_stack(
    dev_env: dict[str, str], tmp_path: Path
) -> None:
    temporal_port = int(dev_env["TEMPORAL_ADDRESS"].rsplit(":", 1)[1])
    ui_port = int(dev_env["AGENTRUN_TEMPORAL_UI_PORT"])
    pg_port = int(dev_env["AGENTRUN_DATABASE_URL"].rsplit(":", 1)[1].split("/")[0])
    first = _agentrun("dev", env=dev_env, cwd=tmp_path)
    try:
        out = _read_until(first, "Worker")
        assert "started PostgreSQL" in out and "started Temporal dev server" in out
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/", timeout=10) as resp:
            assert resp.status == 200
        listed = subprocess.run(
            [
                temporal_cli_path(),
                "operator",
                "search-attribute",
                "list",
                "--address",
                dev_env["TEMPORAL_ADDRESS"],
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for name in SEARCH_ATTRIBUTES:
            assert name in listed
        pg_pid = int((tmp_path / "data/postgres/data/postmaster.pid").read_text().split()[0])
        _check_the_http_api(out, dev_env, tmp_path / "data")

        second = _agentrun("dev", "--no-worker", env=dev_env, cwd=tmp_path)
        out2 = _read_until(second, "Press Ctrl-C")
        assert "already running" in out2 and "reusing it" in out2
        second.send_signal(signal.SIGINT)
        assert second.wait(30) == 0
        # The second start did not stop what the first one started.
        assert port_in_use("127.0.0.1", temporal_port) and port_in_use("127.0.0.1", pg_port)

        first.send_signal(signal.SIGINT)
        assert first.wait(60) == 0
        for port in (temporal_port, ui_port, pg_port):
            assert not port_in_use("127.0.0.1", port), port
        with pytest.raises(ProcessLookupError):
            os.kill(pg_pid, 0)
    finally:
        if first.poll() is None:
            first.kill()


def _check_the_http_api(out: str, env: dict[str, str], data_dir: Path) -> None:
    """dev serves the HTTP API and prints its URL and a dev key kept (0600) in the data folder."""
    url = f"http://127.0.0.1:{env['AGENTRUN_HTTP_PORT']}"
    key_file = data_dir / "dev-api-key"
    key = key_file.read_text().strip()
    assert f"HTTP API   {url} (docs {url}/docs)" in out and key in out
    assert f"Web page   {url}/#key={key}" in out
    with urllib.request.urlopen(f"{url}/", timeout=10) as resp:
        assert resp.status == 200 and b"app.js" in resp.read()
    assert key_file.stat().st_mode & 0o777 == 0o600
    runs = urllib.request.Request(f"{url}/v1/runs", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(runs, timeout=10) as resp:
        assert resp.status == 200
    with urllib.request.urlopen(f"{url}/readyz", timeout=10) as resp:
        assert resp.status == 200


def test_a_port_taken_by_another_program_is_reported(
    dev_env: dict[str, str], tmp_path: Path
) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        env = {**dev_env, "AGENTRUN_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/x"}
        proc = _agentrun("dev", env=env, cwd=tmp_path)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 3
        assert f"port {port}" in out and "not a PostgreSQL server" in out
        assert "Traceback" not in out
    finally:
        blocker.close()


def test_a_bad_setting_stops_start_up_with_its_name(
    dev_env: dict[str, str], tmp_path: Path
) -> None:
    proc = _agentrun("dev", env={**dev_env, "TEMPORAL_ADDRESS": "nohost"}, cwd=tmp_path)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "TEMPORAL_ADDRESS" in out and "Traceback" not in out
