"""Adversarial cases at the tool edge (issue 9, items 1, 3, 4, 5, 17): a call to a tool the run
did not enable, secrets in output, a config that tries to loosen policy, commands that try to
escape the sandbox, NUL output, a worker-killing tool, a huge output, a blocking sync tool."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy.exc
from pydantic import BaseModel, SecretStr
from sqlalchemy import select, text
from temporalio.client import WorkflowFailureError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities.tool_exec import ToolActivities
from activities.tools import BashArgs, Tool, ToolContext, ToolRegistry, bash, builtin_tools
from agentrun.contracts import (
    AgentConfig,
    ExecuteToolInput,
    OutcomeKind,
    ToolCallRequest,
    ToolOutcomeInput,
)
from agentrun.db.models import Message, RunEvent, ToolCall
from agentrun.protocol.events import EventType
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from starter.api import decide
from tests.conftest import WorkerProcess, bash_call, next_event, start_input
from tests.store_helpers import count, model_turn, run_tool_calls
from worker import build_worker
from workflows.agent import AgentRunWorkflow

if TYPE_CHECKING:
    from activities.sandbox import Sandbox

# -- helpers -----------------------------------------------------------------------------------


async def open_run(repo: Repository, run_id: str, config: AgentConfig) -> str:
    session_id = f"s-{uuid.uuid4()}"
    await repo.open_run(
        run_id=run_id,
        session_id=session_id,
        model="offline-scripted",
        config=config,
        prompt="hello",
    )
    return session_id


async def execute(
    acts: ToolActivities,
    repo: Repository,
    run_id: str,
    session_id: str,
    name: str,
    arguments: dict[str, Any],
    call_id: str = "call_1",
) -> Any:
    """The execute_tool activity as an old or wrong workflow would call it."""
    text = json.dumps(arguments)
    await model_turn(
        repo, run_id, session_id, ToolCallRequest(id=call_id, name=name, arguments=text)
    )
    inp = ExecuteToolInput(
        run_id=run_id,
        session_id=session_id,
        turn=1,
        call=ToolCallRequest(id=call_id, name=name, arguments=text),
    )
    return await ActivityEnvironment().run(acts.execute_tool, inp)


def sleepers(marker: str) -> list[int]:
    """Pids of processes whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline and "bash -c" not in cmdline:
            found.append(int(entry.name))
    return found


def working_in(folder: Path) -> list[int]:
    """Pids of processes whose current folder is `folder`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cwd").resolve() == folder.resolve():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


async def until_empty(probe: Callable[[], list[int]], timeout: float = 10) -> list[int]:
    """Wait (bounded) for `probe` to find nothing; returns what it found last."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if not found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def run_to_end(env: WorkflowEnvironment, settings: Settings, inp: Any) -> Any:
    return await asyncio.wait_for(
        env.client.execute_workflow(
            AgentRunWorkflow.run, inp, id=inp.run_id, task_queue=settings.task_queue
        ),
        90,
    )


# -- item 1: the second guard ------------------------------------------------------------------


async def test_execute_tool_refuses_a_tool_the_run_did_not_enable(
    repo: Repository, settings: Settings, run_id: str, tmp_path: Path
) -> None:
    session_id = await open_run(repo, run_id, AgentConfig(tools=["calculator"]))
    # Positional, as worker.py built it before: the workspace root, settings from defaults.
    acts = ToolActivities(repo, ToolRegistry(builtin_tools()), tmp_path)
    marker = tmp_path / "ran"
    result = await execute(acts, repo, run_id, session_id, "bash", {"command": f"touch {marker}"})
    assert result.is_error
    assert "tool 'bash' is not enabled for this run" in result.preview
    assert "calculator" in result.preview
    assert not marker.exists()
    call = await repo.get_tool_call(run_id, "call_1")
    assert call.status == "error" and "not enabled" in (call.result or "")


async def test_execute_tool_refuses_an_unapproved_call_that_needs_approval(
    repo: Repository, settings: Settings, run_id: str, tmp_path: Path
) -> None:
    session_id = await open_run(repo, run_id, AgentConfig(tools=["bash"]))
    acts = ToolActivities(repo, ToolRegistry(builtin_tools()), tmp_path)
    marker = tmp_path / "ran"
    result = await execute(acts, repo, run_id, session_id, "bash", {"command": f"touch {marker}"})
    assert result.is_error and "needs approval and none was recorded" in result.preview
    assert not marker.exists()


# -- issue 10: outcomes recorded without a run, through either activity -----------------------


async def test_outcomes_are_recorded_without_running_by_either_activity(
    repo: Repository, settings: Settings, run_id: str, tmp_path: Path
) -> None:
    """agentrun.record_tool_outcome records what it is given; agentrun.execute_tool still does
    the same with the old input (skip_reason, given_result) that runs scheduled before the
    split send. Neither runs the tool, and a call that has its result keeps it."""
    session_id = await open_run(repo, run_id, AgentConfig(tools=["bash"]))
    acts = ToolActivities(repo, ToolRegistry(builtin_tools()), settings=settings)
    marker = tmp_path / "ran"
    arguments = json.dumps({"command": f"touch {marker}"})

    def request(call_id: str) -> ToolCallRequest:
        return ToolCallRequest(id=call_id, name="bash", arguments=arguments)

    await model_turn(
        repo, run_id, session_id, *(request(c) for c in ("new", "old_skip", "old_given"))
    )
    env = ActivityEnvironment()

    outcome = ToolOutcomeInput(
        run_id=run_id,
        session_id=session_id,
        turn=1,
        call=request("new"),
        kind=OutcomeKind.REJECTED,
        text="error: the call was rejected by bob",
    )
    recorded = await env.run(acts.record_tool_outcome, outcome)
    assert (recorded.is_error, recorded.replayed) == (True, False)
    again = await env.run(
        acts.record_tool_outcome, outcome.model_copy(update={"text": "something else"})
    )
    assert again.replayed and again.preview == "error: the call was rejected by bob"

    old = {"run_id": run_id, "session_id": session_id, "turn": 1}
    skipped = await env.run(
        acts.execute_tool,
        ExecuteToolInput(**old, call=request("old_skip"), skip_reason="error: not run"),
    )
    given = await env.run(
        acts.execute_tool,
        ExecuteToolInput(**old, call=request("old_given"), given_result='{"ok": true}'),
    )
    assert (skipped.is_error, skipped.preview) == (True, "error: not run")
    assert (given.is_error, given.preview) == (False, '{"ok": true}')
    assert not marker.exists()
    calls = {c.tool_call_id: c for c in await run_tool_calls(repo, run_id)}
    assert calls["new"].result == "error: the call was rejected by bob"
    assert [calls[c].attempts for c in ("new", "old_skip", "old_given")] == [0, 0, 0]


# -- item 3: secrets ---------------------------------------------------------------------------

API_KEY = "sk-test-Zx9Qv7Lm3Np1"
DB_PASSWORD = "pw-Hq4Tr8Yk2Wd6"


class NoArgs(BaseModel):
    pass


async def test_secrets_never_reach_the_store_or_the_model(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parts = urlsplit(settings.database_url)
    # Trust auth ignores the password; the worker still knows it and must never show it.
    db_url = parts._replace(
        netloc=f"{parts.username or 'postgres'}:{DB_PASSWORD}@{parts.hostname}:{parts.port}"
    ).geturl()
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("AGENTRUN_DATABASE_URL", db_url)
    secret_settings = settings.model_copy(
        update={"openai_api_key": SecretStr(API_KEY), "database_url": db_url}
    )

    def leak(args: NoArgs, ctx: ToolContext) -> str:
        return f"key={os.environ['OPENAI_API_KEY']} url={os.environ['AGENTRUN_DATABASE_URL']}"

    registry = ToolRegistry([*builtin_tools(), Tool("leak", "Leaks.", NoArgs, leak)])
    prompt = f"leak the secrets {run_id}"
    model_server.script(
        prompt,
        [
            Reply(
                tool_calls=[
                    ToolCallSpec(
                        "bash",
                        {"command": "env; echo key=$OPENAI_API_KEY; echo $AGENTRUN_DATABASE_URL"},
                        id="call_env",
                    ),
                    ToolCallSpec("leak", {}, id="call_leak"),
                ]
            ),
            Reply(text="Nothing to see."),
        ],
    )
    w = build_worker(
        temporal_env.client,
        secret_settings,
        repo,
        registry=registry,
        graceful_shutdown=timedelta(seconds=1),
    )
    async with w:
        handle = await temporal_env.client.start_workflow(
            AgentRunWorkflow.run,
            start_input(run_id, prompt, workspace=str(tmp_path)),
            id=run_id,
            task_queue=settings.task_queue,
        )
        await next_event(repo, run_id, EventType.TOOL_APPROVAL_REQUESTED)
        await decide(temporal_env.client, run_id, "call_env", "approve", decided_by="t")
        result = await asyncio.wait_for(handle.result(), 60)
    assert result.status == "DONE"
    calls = {c.tool_call_id: c for c in await run_tool_calls(repo, run_id)}
    assert "[redacted:OPENAI_API_KEY]" in (calls["call_leak"].result or "")
    assert "[redacted:AGENTRUN_DATABASE_URL]" in (calls["call_leak"].result or "")
    assert "HOME=" in (calls["call_env"].result or "")
    stored = [c.result or "" for c in calls.values()]
    async with repo.session() as db:
        stored += [
            m or ""
            for m in (
                await db.execute(select(Message.content).where(Message.run_id == run_id))
            ).scalars()
        ]
        stored += [
            json.dumps(d)
            for d in (
                await db.execute(select(RunEvent.data).where(RunEvent.run_id == run_id))
            ).scalars()
        ]
    stored += [json.dumps(r.body) for r in model_server.requests_for(prompt)]
    for seen in stored:
        assert API_KEY not in seen and DB_PASSWORD not in seen, seen[:500]
    assert await count(repo, ToolCall, run_id=run_id) == 2


# -- item 3: a config cannot loosen policy -----------------------------------------------------


@pytest.fixture
async def strict_worker(
    temporal_env: WorkflowEnvironment, settings: Settings, repo: Repository
) -> AsyncIterator[Settings]:
    """A worker with the default floors (bash needs approval)."""
    strict = settings.model_copy(update={"approval_floor": {}})
    w = build_worker(temporal_env.client, strict, repo, graceful_shutdown=timedelta(seconds=1))
    async with w:
        yield strict


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"approval_overrides": {"bash": "auto"}}, "would run bash without approval"),
        ({"approval": "skip_all"}, "would run bash without approval"),
        ({"workspace": "/", "tools": ["read_file"]}, "outside this worker's workspace root"),
    ],
    ids=["override-auto", "skip_all", "workspace-root"],
)
async def test_a_config_that_loosens_policy_is_refused_at_open(
    temporal_env: WorkflowEnvironment,
    strict_worker: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
    config: dict[str, Any],
    message: str,
) -> None:
    prompt = f"loosen {run_id}"
    marker = tmp_path / "ran"
    model_server.script(
        prompt,
        [
            Reply(
                tool_calls=[
                    ToolCallSpec("bash", {"command": f"touch {marker}"}, id="call_bash"),
                    ToolCallSpec("read_file", {"path": "etc/passwd"}, id="call_read"),
                ]
            ),
            Reply(text="Done."),
        ],
    )
    with pytest.raises(WorkflowFailureError) as info:
        await run_to_end(temporal_env, strict_worker, start_input(run_id, prompt, **config))
    assert message in str(info.value.cause)
    assert not marker.exists()
    assert await repo.find_run(run_id) is None
    assert model_server.requests_for(prompt) == []


# -- item 3: the sandbox -----------------------------------------------------------------------


def ctx_in(workspace: Path, sandbox: Sandbox | None = None) -> ToolContext:
    extra: dict[str, Any] = {"sandbox": sandbox} if sandbox is not None else {}
    return ToolContext(f"run-{uuid.uuid4()}", "call_x", workspace, **extra)


async def test_detached_commands_do_not_outlive_the_call(tmp_path: Path) -> None:
    tag = str(3000 + os.getpid() % 997)
    command = f"(sleep {tag}1 &) ; setsid nohup sleep {tag}2 >/dev/null 2>&1 & echo started"
    try:
        out = await bash(BashArgs(command=command, timeout_s=10), ctx_in(tmp_path))
        assert out.startswith("exit code 0\nstarted")
        # The kernel tears the namespace down as the call ends; allow it a moment, bounded.
        assert await until_empty(lambda: sleepers(f"sleep {tag}")) == []
    finally:
        kill_all(sleepers(f"sleep {tag}"))


async def test_a_command_cannot_reach_the_database_or_be_root(
    tmp_path: Path, database_url: str
) -> None:
    port = urlsplit(database_url).port
    out = await bash(
        BashArgs(
            command=f"id -u; (echo > /dev/tcp/127.0.0.1/{port}) && echo CONNECTED || echo REFUSED"
        ),
        ctx_in(tmp_path),
    )
    lines = out.splitlines()
    assert lines[1] != "0", out
    assert "REFUSED" in out and "CONNECTED" not in out, out


async def test_resource_limits_apply(tmp_path: Path) -> None:
    from activities.sandbox import Sandbox, SandboxConfig

    sandbox = Sandbox(SandboxConfig(file_mb=1, max_procs=64, cpu_s=20))
    out = await bash(
        BashArgs(
            command="ulimit -u; ulimit -f; ulimit -t; "
            "head -c 3000000 /dev/zero > big 2>/dev/null; stat -c %s big"
        ),
        ctx_in(tmp_path, sandbox),
    )
    lines = out.splitlines()
    assert lines[1:4] == ["64", "1024", "20"], out
    assert lines[-1] == str(1 << 20), out  # the write stopped at the limit


async def test_the_environment_is_an_allowlist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from activities.sandbox import Sandbox, SandboxConfig

    monkeypatch.setenv("SOME_WORKER_SECRET", "do-not-pass-me")
    monkeypatch.setenv("PASS_ME", "passed")
    sandbox = Sandbox(SandboxConfig(env_allow=("PASS_ME",)))
    out = await bash(BashArgs(command="env"), ctx_in(tmp_path, sandbox))
    assert "do-not-pass-me" not in out and "PASS_ME=passed" in out
    assert f"HOME={tmp_path}" in out and "AGENTRUN_TOOL_CALL_ID=call_x" in out


async def test_each_session_has_its_own_workspace(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    first, second = f"run-{uuid.uuid4()}", f"run-{uuid.uuid4()}"
    model_server.script(
        f"first {first}", [bash_call("echo one > note.txt; cat note.txt"), Reply(text="ok")]
    )
    model_server.script(
        f"second {second}",
        [bash_call("cat note.txt 2>&1 || true; echo two > note.txt"), Reply(text="ok")],
    )
    for rid, prompt in ((first, f"first {first}"), (second, f"second {second}")):
        result = await run_to_end(
            temporal_env, settings, start_input(rid, prompt, approval="skip_all")
        )
        assert result.status == "DONE"
    one = await repo.get_tool_call(first, "call_bash")
    two = await repo.get_tool_call(second, "call_bash")
    assert one.result == "exit code 0\none\n"
    assert "No such file" in (two.result or "") and "one" not in (two.result or "")
    folders = sorted((settings.tool_workspace_root / "sessions").iterdir())
    notes = sorted((f / "note.txt").read_text() for f in folders if (f / "note.txt").exists())
    assert notes == ["one\n", "two\n"]


# -- item 4: NUL bytes -------------------------------------------------------------------------


async def test_nul_output_is_stored_once_with_a_note(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"nul {run_id}"
    (tmp_path / "blob.bin").write_bytes(b"\x7fELF\x00\x00\x01binary\x00tail")
    model_server.script(
        prompt,
        [
            Reply(
                tool_calls=[
                    ToolCallSpec(
                        "bash", {"command": "echo ran >> count.log; printf 'a\\0b'"}, id="call_nul"
                    ),
                    ToolCallSpec("read_file", {"path": "blob.bin"}, id="call_bin"),
                ]
            ),
            Reply(text="Read it."),
        ],
    )
    handle = await temporal_env.client.start_workflow(
        AgentRunWorkflow.run,
        start_input(run_id, prompt, workspace=str(tmp_path)),
        id=run_id,
        task_queue=settings.task_queue,
    )
    await next_event(repo, run_id, EventType.TOOL_APPROVAL_REQUESTED)
    await decide(temporal_env.client, run_id, "call_nul", "approve", decided_by="t")
    result = await asyncio.wait_for(handle.result(), 45)
    assert result.status == "DONE"
    assert (tmp_path / "count.log").read_text() == "ran\n"
    calls = {c.tool_call_id: c for c in await run_tool_calls(repo, run_id)}
    assert calls["call_nul"].result == ("exit code 0\na\ufffdb\n[1 NUL byte replaced with \ufffd]")
    assert calls["call_nul"].attempts == 1
    assert "binary\ufffdtail" in (calls["call_bin"].result or "")
    assert "[3 NUL bytes replaced with \ufffd]" in (calls["call_bin"].result or "")


async def test_data_errors_are_final_and_carry_no_values(repo: Repository, run_id: str) -> None:
    from activities.errors import as_non_retryable

    session_id = await open_run(repo, run_id, AgentConfig(tools=["calculator"]))
    await model_turn(
        repo, run_id, session_id, ToolCallRequest(id="c", name="calculator", arguments="{}")
    )
    with pytest.raises(sqlalchemy.exc.SQLAlchemyError) as info:
        await repo.record_tool_result(
            session_id=session_id,
            run_id=run_id,
            tool_call_id="c",
            result="TOP-SECRET-OUTPUT\x00",
            is_error=False,
        )
    assert "TOP-SECRET-OUTPUT" not in str(info.value)
    failure = as_non_retryable(info.value)
    assert failure is not None and failure.non_retryable and failure.type == "DataError"
    assert "TOP-SECRET-OUTPUT" not in failure.message


# -- item 5: a tool that kills its worker, a huge output ---------------------------------------


@pytest.fixture
def worker_process(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    wp = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        yield wp
    finally:
        wp.stop()


async def test_a_tool_whose_worker_dies_runs_at_most_max_attempts_times(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    worker_process: WorkerProcess,
    run_id: str,
    tmp_path: Path,
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    prompt = f"kill my worker {run_id}"
    model_server.script(
        prompt,
        [bash_call("echo started >> starts.log; sleep 120"), Reply(text="It never finished.")],
    )
    worker_process.start()
    handle = await temporal_env.client.start_workflow(
        AgentRunWorkflow.run,
        start_input(
            run_id,
            prompt,
            workspace=str(workspace),
            tool_heartbeat_timeout_s=2,
            approval="skip_all",
        ),
        id=run_id,
        task_queue=settings.task_queue,
    )
    starts = workspace / "starts.log"
    max_attempts = 3  # bash's
    for n in range(1, max_attempts + 1):
        deadline = time.monotonic() + 60
        while not starts.exists() or len(starts.read_text().splitlines()) < n:
            assert time.monotonic() < deadline, f"start {n} never came"
            await asyncio.sleep(0.1)
        worker_process.kill()  # as if the command had killed it
        worker_process.start()
    result = await asyncio.wait_for(handle.result(), 90)
    assert result.status == "DONE" and result.final_text == "It never finished."
    assert starts.read_text().splitlines() == ["started"] * max_attempts
    call = await repo.get_tool_call(run_id, "call_bash")
    assert call.is_error and call.attempts == max_attempts
    assert call.result == (
        f"error: bash was started {max_attempts} times and never finished: its worker was "
        "lost each time (or its result could not be recorded); not run again"
    )


async def test_a_huge_output_is_cut_and_the_command_stopped(tmp_path: Path) -> None:
    started = time.monotonic()
    # 50 MB, then a wait: read whole, it would take the timeout; bounded, it stops at the cap.
    command = "yes | head -c 50000000; sleep 100"
    out = await bash(BashArgs(command=command, timeout_s=60), ctx_in(tmp_path))
    assert time.monotonic() - started < 30
    assert out.startswith("exit code killed (output past the cap)\ny\ny\n")
    assert out.endswith("[output truncated at 16000 characters; the command was stopped]")
    assert len(out) < 16_200
    assert await until_empty(lambda: working_in(tmp_path)) == []


# -- item 17: a synchronous tool that blocks ---------------------------------------------------


async def test_a_blocking_sync_tool_times_out(
    repo: Repository, run_id: str, tmp_path: Path
) -> None:
    release = threading.Event()

    def stuck(args: NoArgs, ctx: ToolContext) -> str:
        release.wait(30)
        return "finally"

    registry = ToolRegistry([Tool("stuck", "Blocks.", NoArgs, stuck, timeout_s=1)])
    session_id = await open_run(repo, run_id, AgentConfig(tools=["stuck"]))
    acts = ToolActivities(repo, registry, tmp_path)
    started = time.monotonic()
    try:
        result = await execute(acts, repo, run_id, session_id, "stuck", {})
    finally:
        release.set()
    assert time.monotonic() - started < 15
    assert result.is_error and result.preview == "error: stuck timed out after 1s"


async def test_every_activity_fails_a_data_error_at_once(
    temporal_env: WorkflowEnvironment, settings: Settings, repo: Repository
) -> None:
    from temporalio.exceptions import ApplicationError
    from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput

    from activities.errors import NonRetryableDataErrors

    class Raises(ActivityInboundInterceptor):
        def __init__(self) -> None:
            pass

        async def execute_activity(self, input: ExecuteActivityInput) -> Any:
            async with repo.session() as db:
                await db.execute(text("SELECT CAST(:v AS integer)"), {"v": "SECRET-VALUE-42"})

    inbound = NonRetryableDataErrors().intercept_activity(Raises())
    with pytest.raises(ApplicationError) as info:
        await inbound.execute_activity(ExecuteActivityInput(lambda: None, [], None, {}))
    assert info.value.non_retryable and info.value.type == "DataError"
    assert "invalid input syntax for type integer" in info.value.message
    assert "SECRET-VALUE-42" not in info.value.message and info.value.__cause__ is None
    w = build_worker(temporal_env.client, settings, repo)
    assert any(isinstance(i, NonRetryableDataErrors) for i in w.config()["interceptors"])
