"""The `agentrun` CLI and the starter/ scripts, driven as subprocesses against the real stack
(the session's Temporal dev server and PostgreSQL, a worker in this process, the offline
model)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.protocol.events import EventType
from agentrun.settings import Settings
from agentrun.stack import free_port
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from tests.conftest import bash_call, next_event


@dataclass
class Done:
    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "AGENTRUN_DATABASE_URL": settings.database_url,
        "AGENTRUN_TASK_QUEUE": settings.task_queue,
        "AGENTRUN_DATA_DIR": str(settings.data_dir),
        "COLUMNS": "200",
        "NO_COLOR": "1",
        # `demo` serves the HTTP API and the web page: on a port of its own per test.
        "AGENTRUN_HTTP_PORT": str(free_port()),
    }
    env.update(extra)
    return env


async def spawn(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from starter.cli import main; main()",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def agentrun(env: dict[str, str], *args: str, timeout: float = 90) -> Done:
    proc = await spawn(env, *args)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return Done(proc.returncode or 0, out.decode(), err.decode())


async def script(env: dict[str, str], module: str, *args: str) -> Done:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    return Done(proc.returncode or 0, out.decode(), err.decode())


async def test_run_with_yes_approves_and_prints_the_answer(
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"say hi with bash {run_id}"
    model_server.script(
        prompt, [bash_call("echo hi-from-bash", "call_yes"), Reply(text="Said hi.")]
    )
    done = await agentrun(
        cli_env(settings), "run", prompt, "--run-id", run_id, "--yes", "--workspace", str(tmp_path)
    )
    assert done.code == 0, done.err
    assert "approval needed for bash" in done.out
    assert "hi-from-bash" in done.out and "Said hi." in done.out and "DONE" in done.out
    assert "2 model calls · 1 tool calls" in done.out
    call = await repo.get_tool_call(run_id, "call_yes")
    assert call.decision == "approve" and call.decided_by == "agentrun run --yes"


async def test_json_output_is_one_object_per_event_then_a_summary(
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"json please {run_id}"
    model_server.script(prompt, [Reply(text="JSON answer.")])
    done = await agentrun(
        cli_env(settings), "run", prompt, "--run-id", run_id, "--tools", "", "--json"
    )
    assert done.code == 0, done.err
    lines = done.json_lines()
    *events, summary = lines
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert {"seq", "type", "data"} <= set(events[0])
    text = "".join(e["data"]["text"] for e in events if e["type"] == EventType.MESSAGE_DELTA)
    assert text == "JSON answer."
    assert summary["run_id"] == run_id and summary["status"] == "DONE"
    assert summary["usage"]["llm_calls"] == 1 and summary["usage"]["turns"] == 1
    run = await repo.get_run(run_id)
    assert summary["usage"]["prompt_tokens"] == run.prompt_tokens


async def test_approval_from_a_second_process_while_the_first_follows(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"two processes {run_id}"
    model_server.script(
        prompt, [bash_call("echo approved-elsewhere", "call_2p"), Reply(text="Ok.")]
    )
    env = cli_env(settings)
    first = await spawn(
        env, "run", prompt, "--run-id", run_id, "--no-input", "--json", "--workspace", str(tmp_path)
    )

    await next_event(repo, run_id, EventType.TOOL_APPROVAL_REQUESTED)
    status = await agentrun(env, "status", run_id, "--json")
    view = json.loads(status.out)
    assert view["status"] == "WAITING_APPROVAL"
    assert [p["tool_call_id"] for p in view["pending"]] == ["call_2p"]
    second = await agentrun(env, "approve", run_id, "call_2p", "--by", "second-process")
    assert second.code == 0, second.err
    assert "approve bash (call_2p) by second-process" in second.out
    again = await agentrun(env, "reject", run_id, "call_2p", "--reason", "late")
    # Refused either way: decided already, or the run has finished meanwhile.
    assert again.code == 1 and ("already decided" in again.err or "already ended" in again.err)
    out, err = await asyncio.wait_for(first.communicate(), 60)
    assert first.returncode == 0, err.decode()
    lines = [json.loads(x) for x in out.decode().splitlines()]
    types = [x.get("type") for x in lines[:-1]]
    assert EventType.TOOL_APPROVAL_REQUESTED in types and EventType.TOOL_DECIDED in types
    assert lines[-1]["status"] == "DONE"
    decided = next(x for x in lines if x.get("type") == EventType.TOOL_DECIDED)
    assert decided["data"]["decided_by"] == "second-process"


async def test_follow_resumes_from_a_cursor_without_loss_or_repeats(
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"follow me {run_id}"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("calculator", {"expression": "3*3"})]),
            Reply(text="Nine."),
        ],
    )
    env = cli_env(settings)
    done = await agentrun(env, "run", prompt, "--run-id", run_id, "--json")
    all_events = done.json_lines()[:-1]
    cut = len(all_events) // 2
    resumed = await agentrun(env, "follow", run_id, "--from", str(cut), "--json")
    assert resumed.code == 0
    tail = resumed.json_lines()[:-1]
    assert [e["seq"] for e in tail] == [e["seq"] for e in all_events[cut:]]
    assert all_events[:cut] + tail == all_events
    human = await agentrun(env, "follow", run_id)
    assert "Nine." in human.out and "calculator" in human.out
    transcript = await agentrun(env, "transcript", run_id, "--json")
    roles = [m["role"] for m in transcript.json_lines()]
    assert roles == ["user", "assistant", "tool", "assistant"]
    listed = await agentrun(env, "ls", "--status", "DONE", "--json")
    assert run_id in [r["run_id"] for r in listed.json_lines()]


async def test_cancel_from_the_cli(
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"cancel me {run_id}"
    model_server.script(prompt, [Reply(text="slow " * 500, delay_s=0.02)])
    env = cli_env(settings)
    follower = await spawn(env, "run", prompt, "--run-id", run_id, "--tools", "", "--json")

    await next_event(repo, run_id, EventType.MESSAGE_DELTA)
    done = await agentrun(env, "cancel", run_id, "--reason", "testing")
    assert done.code == 0 and done.out.startswith("CANCELED"), done.out + done.err
    out, _ = await asyncio.wait_for(follower.communicate(), 60)
    assert follower.returncode == 1  # the run did not end DONE
    assert json.loads(out.decode().splitlines()[-1])["status"] == "CANCELED"


async def test_errors_are_one_line_with_documented_exit_codes(
    settings: Settings, worker: Worker, run_id: str
) -> None:
    env = cli_env(settings)
    cases = [
        (("follow", "no-such-run"), 4, "no run 'no-such-run'"),
        (("status", "no-such-run"), 4, "no run 'no-such-run'"),
        (("cancel", "no-such-run"), 4, "no run 'no-such-run'"),
        (("approve", "no-such-run", "call_1"), 4, "no run 'no-such-run'"),
        (("transcript",), 2, "give a RUN_ID or --session"),
        (("follow", "x", "--from", "-1"), 2, "--from takes"),
        (("approve", "r", "c", "--args", "{nope"), 2, "--args is not JSON"),
        (("ls", "--status", "SLEEPING"), 2, "--status must be one of"),
        (("run", "   "), 2, "the prompt is empty"),
    ]
    for args, code, message in cases:
        done = await agentrun(env, *args)
        assert done.code == code, (args, done.code, done.err)
        assert message in done.err, (args, done.err)
        assert "Traceback" not in done.err and len(done.err.strip().splitlines()) == 1, done.err
    stopped = cli_env(settings, TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}")
    done = await agentrun(stopped, "run", "hello")
    assert done.code == 3 and "cannot reach Temporal" in done.err and "Traceback" not in done.err
    no_db = cli_env(
        settings, AGENTRUN_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/x"
    )
    done = await agentrun(no_db, "follow", run_id)
    assert done.code == 3 and "cannot reach PostgreSQL" in done.err
    bad = cli_env(settings, TEMPORAL_ADDRESS="not-an-address")
    done = await agentrun(bad, "ls")
    assert done.code == 2 and "TEMPORAL_ADDRESS" in done.err


async def test_starter_scripts(
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    tmp_path: Path,
) -> None:
    env = cli_env(settings)
    run_a = f"run-script-a-{os.getpid()}-{free_port()}"
    model_server.script(f"script start {run_a}", [Reply(text="Started and waited.")])
    done = await script(env, "starter.start_and_wait", f"script start {run_a}", "--run-id", run_a)
    assert done.code == 0, done.err
    result = json.loads(done.out)
    assert result["status"] == "DONE" and result["final_text"] == "Started and waited."

    run_b = f"run-script-b-{os.getpid()}-{free_port()}"
    model_server.script(f"decide {run_b}", [bash_call("echo x", "call_s"), Reply(text="Fine.")])
    follower = await spawn(
        env,
        "run",
        f"decide {run_b}",
        "--run-id",
        run_b,
        "--no-input",
        "--json",
        "--workspace",
        str(tmp_path),
    )

    await next_event(repo, run_b, EventType.TOOL_APPROVAL_REQUESTED)
    done = await script(env, "starter.send_decision", run_b, "reject", "--reason", "scripted")
    assert done.code == 0 and "reject bash call_s" in done.out, done.err
    await asyncio.wait_for(follower.communicate(), 60)
    call = await repo.get_tool_call(run_b, "call_s")
    assert (call.decision, call.decision_reason) == ("reject", "scripted")

    run_c = f"run-script-c-{os.getpid()}-{free_port()}"
    model_server.script(f"to cancel {run_c}", [Reply(text="z " * 500, delay_s=0.02)])
    follower = await spawn(env, "run", f"to cancel {run_c}", "--run-id", run_c, "--json")

    await next_event(repo, run_c, EventType.MESSAGE_DELTA)
    done = await script(env, "starter.cancel", run_c, "--reason", "scripted")
    assert done.code == 0 and done.out.startswith("CANCELED"), done.err
    await asyncio.wait_for(follower.communicate(), 60)
    assert (await repo.get_run(run_c)).status == "CANCELED"
    done = await script(env, "starter.cancel", run_c)
    assert "already ended" in done.out


async def test_the_database_password_is_never_printed(settings: Settings) -> None:
    secret = "pw-d0-not-print-me"
    unreachable = f"postgresql://agentrun:{secret}@127.0.0.1:{free_port()}/agentrun"
    env = cli_env(settings, AGENTRUN_DATABASE_URL=unreachable)
    for args in (("db", "current"), ("transcript", "run-nope"), ("follow", "run-nope")):
        done = await agentrun(env, *args)
        assert done.code == 3, (args, done)
        assert secret not in done.out + done.err, args
        assert "agentrun:***@127.0.0.1" in done.err, args


async def test_demo_without_a_terminal_does_not_approve_a_real_models_calls(
    settings: Settings, tmp_path: Path
) -> None:
    # A real endpoint is configured (it need not answer: nothing may start before the refusal).
    env = cli_env(
        settings,
        OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
        AGENTRUN_MODEL="some-real-model",
        AGENTRUN_DATA_DIR=str(tmp_path / "demo-data"),
    )
    done = await agentrun(env, "demo", "--prompt", "run `rm -rf ~`")
    assert done.code == 2, done
    assert "--yes" in done.err and "some-real-model" in done.err
    assert not (tmp_path / "demo-data").exists()
