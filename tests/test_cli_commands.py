"""Issue 11's commands and messages, driven as subprocesses against the real stack: a config
checked before anything starts, cancel's answer, long prompts, whole ids and links at 80
columns, one count everywhere, edits in the transcript, usage errors, the workspace and the
session in run's header."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.client import RunNotFound, describe_run, run_status
from agentrun.contracts.run import MAX_PROMPT_CHARS
from agentrun.protocol.events import EventType
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from tests.conftest import bash_call, next_event
from tests.test_cli import Done, agentrun, cli_env, spawn


async def agentrun_with_stdin(env: dict[str, str], stdin: bytes, *args: str) -> Done:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from starter.cli import main; main()",
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 90)
    return Done(proc.returncode or 0, out.decode(), err.decode())


def one_line(done: Done) -> str:
    assert "Traceback" not in done.err, done.err
    assert len(done.err.strip().splitlines()) == 1, done.err
    return done.err


async def assert_never_started(client: Client, repo: Repository, run_id: str) -> None:
    assert await repo.find_run(run_id) is None
    with pytest.raises(RunNotFound):
        await describe_run(client, run_id)


# -- 7: the config is checked before the start -------------------------------------------------


async def test_a_config_the_worker_would_refuse_starts_nothing(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    env = cli_env(settings)
    cases = [
        (("--tools", "calculator,nosuch"), "unknown tool(s) nosuch"),
        (("--config", '{"approval_overrides": {"nosuch": "auto"}}'), "unknown tool(s): nosuch"),
        (("--config", '{"approval_allow": ["ghost"], "tools": ["ls"]}'), "ghost"),
    ]
    for options, message in cases:
        done = await agentrun(env, "run", "hello", "--run-id", run_id, *options)
        assert done.code == 2, (options, done)
        assert message in one_line(done), done.err
        assert "run-" not in done.out and done.out.strip() == "", done.out
        await assert_never_started(temporal_env.client, repo, run_id)
    # The worker's floor is its own (bash may run unasked on this one): not checked here.
    model_server.script(f"skip all {run_id}", [Reply(text="Skipped.")])
    done = await agentrun(
        env, "run", f"skip all {run_id}", "--run-id", run_id, "--approval", "skip_all"
    )
    assert done.code == 0 and "Skipped." in done.out, done.err


# -- 8: cancel reports the run's own status ----------------------------------------------------


async def test_cancel_of_a_cancelled_run_says_canceled(
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"cancel twice {run_id}"
    model_server.script(prompt, [Reply(text="slow " * 500, delay_s=0.02)])
    env = cli_env(settings)
    follower = await spawn(env, "run", prompt, "--run-id", run_id, "--tools", "", "--json")
    await next_event(repo, run_id, EventType.MESSAGE_DELTA)
    first = await agentrun(env, "cancel", run_id)
    assert first.code == 0 and first.out.startswith("CANCELED"), first
    await asyncio.wait_for(follower.communicate(), 60)
    again = await agentrun(env, "cancel", run_id)
    assert again.code == 0, again
    assert again.out.startswith("CANCELED: the run already ended (CANCELED)"), again.out
    as_json = await agentrun(env, "cancel", run_id, "--json")
    assert json.loads(as_json.out)["status"] == "CANCELED"


# -- 16: long prompts from stdin or a file -----------------------------------------------------


async def test_a_long_prompt_from_stdin_or_a_file(
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    tmp_path: Path,
) -> None:
    env = cli_env(settings)
    key = f"long-{uuid.uuid4()}"
    prompt = key + " " + "word " * ((MAX_PROMPT_CHARS - 100) // 5)  # near the limit
    model_server.script(key, [Reply(text="Read it all."), Reply(text="Read the file.")])
    piped = await agentrun_with_stdin(env, prompt.encode(), "run", "-", "--tools", "", "--json")
    assert piped.code == 0, piped.err
    summary = piped.json_lines()[-1]
    assert summary["status"] == "DONE"
    assert (await repo.run_messages(summary["run_id"]))[0].content == prompt

    path = tmp_path / "prompt.txt"
    path.write_text(prompt)
    from_file = await agentrun(env, "run", "--prompt-file", str(path), "--tools", "")
    assert from_file.code == 0 and "Read the file." in from_file.out, from_file.err
    assert model_server.requests_for(key)[-1].body["messages"][-1]["content"] == prompt

    empty, too_long = tmp_path / "empty.txt", tmp_path / "long.txt"
    empty.write_text("  \n")
    too_long.write_text("x" * (MAX_PROMPT_CHARS + 1))
    cases = [
        (("--prompt-file", str(empty)), "the prompt is empty"),
        (("--prompt-file", str(tmp_path / "missing.txt")), "cannot read --prompt-file"),
        (("--prompt-file", str(tmp_path)), "cannot read --prompt-file"),
        (("--prompt-file", str(too_long)), f"the limit is {MAX_PROMPT_CHARS}"),
        (("hi", "--prompt-file", str(path)), "not both"),
        ((), "give a prompt"),
    ]
    for args, message in cases:
        done = await agentrun(env, "run", *args)
        assert done.code == 2 and message in one_line(done), (args, done)
    done = await agentrun_with_stdin(env, b"", "run", "-")
    assert done.code == 2 and "the prompt is empty (read from stdin)" in one_line(done)


# -- 17: ids and links whole at 80 columns -----------------------------------------------------


async def test_ids_and_links_are_whole_at_80_columns(
    settings: Settings,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    env = cli_env(settings, COLUMNS="80")
    session = f"session-{uuid.uuid4()}"
    prompt = f"narrow {run_id}"
    model_server.script(prompt, [Reply(text="Narrow.")])
    done = await agentrun(
        env, "run", prompt, "--run-id", run_id, "--session", session, "--tools", ""
    )
    assert done.code == 0, done.err
    link = f"/namespaces/{settings.temporal_namespace}/workflows/{run_id}"
    assert link in done.out
    status = await agentrun(env, "status", run_id)
    assert run_id in status.out and session in status.out and link in status.out, status.out
    assert "…" not in status.out
    listed = await agentrun(env, "ls", "--session", session)
    assert listed.code == 0, listed.err
    assert run_id in listed.out and session in listed.out and "…" not in listed.out, listed.out
    wide = await agentrun(cli_env(settings, COLUMNS="200"), "ls", "--session", session)
    assert run_id in wide.out and "┃" in wide.out  # wide enough: still a table

    model_server.script(f"default ids {run_id}", [Reply(text="Ids.")])
    done = await agentrun(env, "run", f"default ids {run_id}", "--tools", "", "--json")
    summary = done.json_lines()[-1]
    listed = await agentrun(env, "ls", "--session", summary["session_id"])
    assert summary["run_id"] in listed.out and summary["session_id"] in listed.out, listed.out
    assert "┃" in listed.out and "…" not in listed.out, listed.out  # ids this short fit a table


# -- 18: one count, pending always a list ------------------------------------------------------


async def test_status_counts_are_the_records_and_pending_is_a_list(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"count me {run_id}"
    model_server.script(
        prompt,
        [
            Reply(
                tool_calls=[
                    ToolCallSpec("calculator", {"expression": "1+1"}, id="call_calc"),
                    ToolCallSpec("bash", {"command": "echo counted"}, id="call_cnt"),
                ]
            ),
            Reply(text="Counted."),
        ],
    )
    env = cli_env(settings)
    follower = await spawn(
        env, "run", prompt, "--run-id", run_id, "--no-input", "--json", "--workspace", str(tmp_path)
    )
    await next_event(repo, run_id, EventType.TOOL_APPROVAL_REQUESTED)
    record = await repo.get_run(run_id)
    waiting = json.loads((await agentrun(env, "status", run_id, "--json")).out)
    assert waiting["usage"]["tool_calls"] == record.tool_call_count == 2
    assert [p["tool_call_id"] for p in waiting["pending"]] == ["call_cnt"]
    # The workflow's own status query counts the same calls, while they wait or run.
    assert (await run_status(temporal_env.client, run_id)).usage.tool_calls == 2
    human = await agentrun(env, "status", run_id)
    assert f"{record.tool_call_count} tool calls" in human.out, human.out
    # A live run: following past its last event says what it waits for, then ends with it.
    ahead = await spawn(env, "follow", run_id, "--from", "9999", "--json")
    assert ahead.stderr is not None
    note = await asyncio.wait_for(ahead.stderr.readline(), 60)
    assert "waiting for events with seq > 9999" in note.decode(), note
    await agentrun(env, "approve", run_id, "call_cnt")
    out, _ = await asyncio.wait_for(follower.communicate(), 60)
    ahead_out, _ = await asyncio.wait_for(ahead.communicate(), 60)
    assert json.loads(ahead_out.decode().splitlines()[-1])["status"] == "DONE"
    summary = json.loads(out.decode().splitlines()[-1])
    ended = json.loads((await agentrun(env, "status", run_id, "--json")).out)
    assert ended["pending"] == [] and ended["status"] == "DONE"
    assert ended["usage"]["tool_calls"] == summary["usage"]["tool_calls"] == 2
    assert ended["usage"]["llm_calls"] == summary["usage"]["llm_calls"] == 2


# -- 19: edits in the transcript ---------------------------------------------------------------


async def test_the_transcript_shows_edited_arguments_and_who_edited(
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"edit me {run_id}"
    model_server.script(prompt, [bash_call("echo original", "call_ed"), Reply(text="Edited.")])
    env = cli_env(settings)
    follower = await spawn(
        env, "run", prompt, "--run-id", run_id, "--no-input", "--json", "--workspace", str(tmp_path)
    )
    await next_event(repo, run_id, EventType.TOOL_APPROVAL_REQUESTED)
    edited = '{"command": "echo replaced"}'
    done = await agentrun(env, "approve", run_id, "call_ed", "--args", edited, "--by", "ana")
    assert done.code == 0, done.err
    await asyncio.wait_for(follower.communicate(), 60)
    transcript = await agentrun(env, "transcript", run_id)
    assert "echo original" in transcript.out and "replaced" in transcript.out
    assert "edited by ana" in transcript.out, transcript.out
    lines = (await agentrun(env, "transcript", run_id, "--json")).json_lines()
    call = next(m for m in lines if m["tool_calls"])["tool_calls"][0]
    assert call["edited"]["by"] == "ana" and "echo replaced" in call["edited"]["arguments"]


# -- 20: usage errors --------------------------------------------------------------------------


async def test_usage_errors_are_the_commands_own(
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    env = cli_env(settings)
    done = await agentrun(env, "run", "hi", "--frobnicate")
    assert done.code == 2 and "usage: agentrun run" in done.err, done.err
    assert "unrecognized arguments: --frobnicate" in done.err
    done = await agentrun(env, "ls", "--limit", "-1")
    assert done.code == 2 and "usage: agentrun ls" in done.err and "1 or more" in done.err
    assert done.out == ""

    prompt = f"short {run_id}"
    model_server.script(prompt, [Reply(text="Short.")])
    ran = await agentrun(env, "run", prompt, "--run-id", run_id, "--tools", "")
    assert ran.code == 0, ran.err
    last = (await repo.get_run(run_id)).last_event_seq
    done = await agentrun(env, "follow", run_id, "--from", "9999")
    assert done.code == 2 and f"at seq {last}" in one_line(done), done.err
    at_end = await agentrun(env, "follow", run_id, "--from", str(last), "--json")
    assert at_end.code == 0 and at_end.json_lines()[-1]["status"] == "DONE"


# -- 23, 24: the workspace and the session in run's header; a session continues -----------------


async def test_run_names_its_session_and_workspace_and_a_session_continues(
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    # The header names the folder by the CLI's settings: the same root as the worker's here.
    env = cli_env(settings, AGENTRUN_WORKSPACE_ROOT=str(settings.tool_workspace_root))
    first_prompt = f"remember the word tangerine {run_id}"
    model_server.script(first_prompt, [Reply(text="Remembered tangerine.")])
    first = await agentrun(env, "run", first_prompt, "--tools", "")
    assert first.code == 0, first.err
    session = next(
        line.split()[1] for line in first.out.splitlines() if line.startswith("session ")
    )
    workspace = settings.tool_workspace_root / "sessions"
    assert f"workspace {workspace}" in first.out, first.out

    second_prompt = f"which word {run_id}"
    model_server.script(second_prompt, [Reply(text="Tangerine.")])
    second = await agentrun(
        env, "run", second_prompt, "--session", session, "--tools", "", "--json"
    )
    assert second.code == 0, second.err
    summary = second.json_lines()[-1]
    assert summary["session_id"] == session
    sent = model_server.requests_for(second_prompt)[-1].body["messages"]
    contents = [m.get("content") for m in sent]
    assert first_prompt in contents and "Remembered tangerine." in contents, contents

    custom = await agentrun(
        env, "run", f"elsewhere {run_id}", "--workspace", str(tmp_path), "--tools", ""
    )
    assert f"workspace {tmp_path}" in custom.out, custom.out


async def test_the_demo_lists_its_sample_files(
    settings: Settings, worker: Worker, model_server: OfflineModelServer, repo: Repository
) -> None:
    # The stack is the session's (the demo reuses it) and so is the worker.
    env = cli_env(settings, AGENTRUN_WORKSPACE_ROOT=str(settings.tool_workspace_root))
    done = await agentrun(env, "demo", "--yes", "--exit", "--prompt", "List the files.")
    assert done.code == 0, done.out + done.err
    demo = settings.tool_workspace_root / "demo"
    assert f"workspace {demo}" in done.out, done.out
    assert "notes.txt" in done.out and "(empty" not in done.out, done.out
    # The ls result names the folder it listed.
    assert f"{demo.resolve()}:" in done.out, done.out
    # Beside the Web UI link: the web page with the local development key in its fragment.
    port = env["AGENTRUN_HTTP_PORT"]
    [line] = [x for x in done.out.splitlines() if x.startswith("Web page:")]
    url, _, key = line.removeprefix("Web page:").strip().partition("/#key=")
    assert url == f"http://127.0.0.1:{port}", line
    info = await repo.authenticate_api_key(key)
    assert info is not None and info.name == "dev" and info.tenant == "default"
