"""Payload encryption on the real dev server: with a key set, a run's history holds no
plaintext of the prompt or the tool arguments; the codec server opens it for the Web UI and
the `temporal` CLI (token, CORS); a rotated key set still reads and replays old runs; a process
without the key cannot read them."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from agentrun.codec_server import CodecServer
from agentrun.contracts import RunResult
from agentrun.converter import codec_from_settings, data_converter
from agentrun.protocol.events import EventType
from agentrun.settings import Settings
from agentrun.stack import free_port, temporal_cli_path
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply
from starter.api import decide, start_run
from tests.conftest import bash_call, next_event
from worker import build_worker, connect_client
from workflows import ALL_WORKFLOWS

BOUND = 90
OLD_KEY = base64.b64encode(b"o" * 32).decode()
NEW_KEY = base64.b64encode(b"n" * 32).decode()
TOKEN = "codec-token-for-tests"
UI_ORIGIN = "http://localhost:8233"


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    return settings.model_copy(update={"payload_keys": codec_setting(f"k1:{OLD_KEY}")}, deep=True)


def codec_setting(text: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(text)


@pytest.fixture
def codec_server(keyed: Settings) -> Iterator[CodecServer]:
    server = CodecServer(
        codec_from_settings(keyed),
        host="127.0.0.1",
        port=free_port(),
        token=TOKEN,
        cors_origins=[UI_ORIGIN],
    ).start()
    try:
        yield server
    finally:
        server.stop()


def post(url: str, body: dict[str, Any] | None, headers: dict[str, str], method: str = "POST"):  # type: ignore[no-untyped-def]
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


async def test_an_encrypted_run_hides_its_prompt_and_tool_arguments_and_the_codec_server_opens_them(
    temporal_env: WorkflowEnvironment,
    keyed: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
    codec_server: CodecServer,
) -> None:
    secret_prompt = f"the launch code is swordfish-{uuid.uuid4().hex[:6]} {run_id}"
    secret_arg = f"echo classified-{uuid.uuid4().hex[:6]}"
    model_server.script(secret_prompt, [bash_call(secret_arg), Reply(text="Done, secretly.")])
    client = await connect_client(keyed)
    async with build_worker(client, keyed, repo, graceful_shutdown=timedelta(seconds=1)):
        handle = await start_run(
            client,
            keyed.task_queue,
            secret_prompt,
            run_id=run_id,
            config={"workspace": str(tmp_path)},
        )
        requested = await next_event(repo, run_id, EventType.TOOL_APPROVAL_REQUESTED, timeout=BOUND)
        await decide(
            client,
            run_id,
            "call_bash",
            "approve",
            arguments_sha256=requested.data["arguments_sha256"],
        )
        result = await asyncio.wait_for(handle.result(), BOUND)
    assert result.status == "DONE" and result.final_text == "Done, secretly."

    # What the server stores, read by a client with no codec at all.
    history = await temporal_env.client.get_workflow_handle(run_id).fetch_history()
    stored = b"".join(e.SerializeToString() for e in history.events)
    for needle in (secret_prompt, "swordfish", secret_arg, "classified", "Done, secretly."):
        assert needle.encode() not in stored, needle
    for key in (OLD_KEY, NEW_KEY):
        assert key.encode() not in stored and base64.b64decode(key) not in stored
    assert b"binary/encrypted" in stored

    # The codec server opens them: a real HTTP request with the token, from the UI's origin.
    start = history.events[0].workflow_execution_started_event_attributes
    body = {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                "data": base64.b64encode(p.data).decode(),
            }
            for p in start.input.payloads
        ]
    }
    url = f"{codec_server.url}/decode"
    status, headers, raw = await asyncio.to_thread(
        post,
        url,
        body,
        {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {TOKEN}",
            "Origin": UI_ORIGIN,
        },
    )
    assert status == 200, raw
    assert headers.get("Access-Control-Allow-Origin") == UI_ORIGIN
    decoded = json.loads(raw)["payloads"][0]
    assert base64.b64decode(decoded["metadata"]["encoding"]) == b"json/plain"
    assert json.loads(base64.b64decode(decoded["data"]))["prompt"] == secret_prompt
    # /encode seals again; without the token, 401 and nothing opened.
    status, _, raw = await asyncio.to_thread(
        post,
        f"{codec_server.url}/encode",
        {"payloads": [decoded]},
        {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    assert status == 200 and b"swordfish" not in raw
    status, headers, raw = await asyncio.to_thread(
        post, url, body, {"Content-Type": "application/json", "Origin": UI_ORIGIN}
    )
    assert status == 401 and b"swordfish" not in raw
    assert headers.get("Access-Control-Allow-Origin") == UI_ORIGIN
    status, _, _ = await asyncio.to_thread(
        post, url, body, {"Content-Type": "application/json", "Authorization": "Bearer wrong"}
    )
    assert status == 401
    # The UI's preflight: answered without the token, for its origin only.
    status, headers, _ = await asyncio.to_thread(
        post,
        url,
        None,
        {
            "Origin": UI_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
        },
        "OPTIONS",
    )
    assert status in (200, 204)
    assert headers.get("Access-Control-Allow-Origin") == UI_ORIGIN
    assert "POST" in headers.get("Access-Control-Allow-Methods", "")
    assert "authorization" in headers.get("Access-Control-Allow-Headers", "").lower()
    _, headers, _ = await asyncio.to_thread(
        post,
        url,
        None,
        {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        "OPTIONS",
    )
    assert "Access-Control-Allow-Origin" not in headers

    # The `temporal` CLI reads the run through the codec server.
    shown = await asyncio.to_thread(
        subprocess.run,
        [
            temporal_cli_path(),
            "workflow",
            "show",
            "-w",
            run_id,
            "-o",
            "json",
            "--address",
            keyed.temporal_address,
            "--codec-endpoint",
            codec_server.url,
            "--codec-auth",
            f"Bearer {TOKEN}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    opened = b" ".join(_payload_data(json.loads(shown.stdout)))
    assert b"swordfish" in opened and b"classified" in opened
    assert base64.b64encode(b"binary/encrypted").decode() not in shown.stdout


def _payload_data(node: Any) -> Iterator[bytes]:
    """The decoded data of every payload in `temporal workflow show -o json` output."""
    if isinstance(node, dict):
        if "data" in node and isinstance(node.get("metadata"), dict):
            yield base64.b64decode(node["data"])
        for value in node.values():
            yield from _payload_data(value)
    elif isinstance(node, list):
        for value in node:
            yield from _payload_data(value)


async def test_a_rotated_key_reads_and_replays_old_runs_and_no_key_cannot(
    temporal_env: WorkflowEnvironment,
    keyed: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"rotate me {run_id}"
    model_server.script(prompt, [Reply(text="Sealed with k1.")])
    client = await connect_client(keyed)
    async with build_worker(client, keyed, repo, graceful_shutdown=timedelta(seconds=1)):
        handle = await start_run(client, keyed.task_queue, prompt, run_id=run_id)
        assert (await asyncio.wait_for(handle.result(), BOUND)).status == "DONE"

    rotated = keyed.model_copy(
        update={"payload_keys": codec_setting(f"k2:{NEW_KEY},k1:{OLD_KEY}")}, deep=True
    )
    rotated_client = await connect_client(rotated)
    old = rotated_client.get_workflow_handle(run_id, result_type=RunResult)
    assert (await old.result()).final_text == "Sealed with k1."
    history = await old.fetch_history()
    await Replayer(workflows=ALL_WORKFLOWS, data_converter=data_converter(rotated)).replay_workflow(
        history
    )
    # New payloads are sealed with the new key.
    [sealed] = await data_converter(rotated).encode(["x"])
    assert sealed.metadata["encryption-key-id"] == b"k2"

    keyless = keyed.model_copy(update={"payload_keys": None})
    with pytest.raises(Exception, match=r"key id 'k1'.*AGENTRUN_PAYLOAD_KEYS"):
        await Replayer(
            workflows=ALL_WORKFLOWS, data_converter=data_converter(keyless)
        ).replay_workflow(WorkflowHistory(run_id, history.events))
    wrong = keyed.model_copy(update={"payload_keys": codec_setting(f"k2:{NEW_KEY}")}, deep=True)
    with pytest.raises(Exception, match=r"key id 'k1'.*holds the key ids k2"):
        await (await connect_client(wrong)).get_workflow_handle(run_id).result()


def test_agentrun_codec_server_serves_until_ctrl_c(tmp_path: Path) -> None:
    import os
    import signal
    import sys
    import time

    from agentrun.codec import PayloadEncryptionCodec, parse_keys
    from agentrun.stack import port_in_use

    port = free_port()
    env = {
        **os.environ,
        "AGENTRUN_PAYLOAD_KEYS": f"k1:{OLD_KEY}",
        "AGENTRUN_CODEC_SERVER_PORT": str(port),
        "AGENTRUN_CODEC_SERVER_TOKEN": TOKEN,
        "COLUMNS": "200",
    }
    cmd = [sys.executable, "-c", "from starter.cli import main; main()", "codec-server"]
    # Without keys there is nothing to serve; beyond 127.0.0.1 a token is required.
    no_keys = subprocess.run(
        cmd, env={**env, "AGENTRUN_PAYLOAD_KEYS": ""}, capture_output=True, text=True, timeout=60
    )
    assert no_keys.returncode == 2 and "AGENTRUN_PAYLOAD_KEYS is not set" in no_keys.stderr
    open_to_all = subprocess.run(
        [*cmd, "--host", "0.0.0.0"],
        env={**env, "AGENTRUN_CODEC_SERVER_TOKEN": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert open_to_all.returncode == 2 and "AGENTRUN_CODEC_SERVER_TOKEN" in open_to_all.stderr

    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not port_in_use("127.0.0.1", port):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout
            time.sleep(0.1)
        [sealed] = PayloadEncryptionCodec(parse_keys(f"k1:{OLD_KEY}")).encode_sync(
            [_json_payload("hello codec")]
        )
        body = {
            "payloads": [
                {
                    "metadata": {
                        k: base64.b64encode(v).decode() for k, v in sealed.metadata.items()
                    },
                    "data": base64.b64encode(sealed.data).decode(),
                }
            ]
        }
        status, _, raw = post(
            f"http://127.0.0.1:{port}/api/default/decode",
            body,
            {"Content-Type": "application/json", "Authorization": TOKEN},
        )
        assert status == 200, raw
        assert base64.b64decode(json.loads(raw)["payloads"][0]["data"]) == b'"hello codec"'
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert f"http://127.0.0.1:{port}" in out and OLD_KEY not in out and TOKEN not in out
    finally:
        if proc.poll() is None:
            proc.kill()


def _json_payload(text: str) -> Any:
    from temporalio.api.common.v1 import Payload

    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(text).encode())
