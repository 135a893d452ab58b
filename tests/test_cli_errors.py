"""Issue 11, the configuration and error items: one-line errors at any width, --json on every
command, a database told apart by what is wrong with it, model settings that take effect in the
worker (and a run that says when its shell names another endpoint), errors that name the model
endpoint, the offline model's speed setting and a custom tool on a worker. Driven through the
CLI as a subprocess against the session's Temporal dev server and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2
import openai
import psycopg
import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

import worker as worker_module
from activities.model_errors import classify
from activities.tools import ToolContext, default_registry
from agentrun.db.migrate import head_revision, upgrade
from agentrun.protocol.events import EventType, RunStatusData
from agentrun.settings import Settings, SettingsError, load_settings
from agentrun.stack import ensure_database, free_port
from agentrun.store import Repository
from agentrun.testing.offline_agent import default_agent
from agentrun.testing.offline_model import Fault, OfflineModelServer, Reply, ToolCallSpec
from examples import custom_tool
from starter.cli import one_line
from starter.connect import database_error
from starter.model_note import model_mismatch
from tests.test_cli import Done, agentrun, cli_env, spawn
from worker import build_worker


def bare_env(**extra: str) -> dict[str, str]:
    """An environment with no agentrun or model settings but these."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AGENTRUN_", "OPENAI_", "TEMPORAL_"))
    }
    env.update({"NO_COLOR": "1", **extra})
    return env


def stack_env(settings: Settings, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The CLI's environment for dev/demo/worker against the session's servers (reused),
    with the worker's own model settings left to each test."""
    env = cli_env(settings, **extra)
    env.update(
        {
            "AGENTRUN_DATA_DIR": str(tmp_path / "data"),
            "AGENTRUN_WORKSPACE_ROOT": str(tmp_path / "workspaces"),
            "AGENTRUN_WORKER_VERSIONING": "false",
        }
    )
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "AGENTRUN_MODEL"):
        if name not in extra:
            env.pop(name, None)
    return env


def one_line_error(done: Done) -> str:
    lines = done.err.strip().splitlines()
    assert len(lines) == 1, done.err
    assert "Traceback" not in done.err
    return lines[0]


async def json_line(proc: asyncio.subprocess.Process, timeout: float = 120) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    assert line, "the process ended before it printed a line"
    parsed: dict[str, Any] = json.loads(line)
    return parsed


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGINT) -> Done:
    proc.send_signal(sig)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return Done(proc.returncode or 0, out.decode(), err.decode())


# -- 11: one line per error, whatever the width ---------------------------------------------


async def test_an_error_is_one_line_at_a_narrow_width_without_a_terminal() -> None:
    narrow = {"COLUMNS": "40"}
    done = await agentrun(bare_env(TEMPORAL_ADDRESS="not-an-address", **narrow), "ls")
    line = one_line_error(done)
    assert done.code == 2 and len(line) > 40
    assert line.endswith("got 'not-an-address'") and "TEMPORAL_ADDRESS" in line
    unreachable = bare_env(TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}", **narrow)
    done = await agentrun(unreachable, "run", "hello " * 30)
    assert done.code == 3 and "or set TEMPORAL_ADDRESS" in one_line_error(done)


def test_a_multi_line_message_is_joined_into_one() -> None:
    text = "missing search attributes. Add them:\n  temporal a\n  temporal b\n(on Cloud: by hand)"
    assert one_line(text) == (
        "missing search attributes. Add them: temporal a; temporal b; (on Cloud: by hand)"
    )


# -- 10: --json on db, dev, demo and worker --------------------------------------------------


async def test_db_commands_answer_json(settings: Settings) -> None:
    env = cli_env(settings)
    for action in ("current", "upgrade"):
        done = await agentrun(env, "db", action, "--json")
        assert done.code == 0, done.err
        record = json.loads(done.out)
        assert record["revision"] == record["head"] == head_revision()
        assert record["up_to_date"] is True
        assert record["database"] == settings.database_url_display


async def test_worker_json_says_when_it_polls_and_when_it_stopped(
    settings: Settings, repo: Repository, model_server: OfflineModelServer, tmp_path: Path
) -> None:
    env = stack_env(
        settings,
        tmp_path,
        OPENAI_BASE_URL=model_server.base_url,
        OPENAI_API_KEY="sk-never-printed",
        AGENTRUN_MODEL="offline-scripted",
    )
    proc = await spawn(env, "worker", "--json")
    polling = await json_line(proc)
    assert polling == {
        "event": "polling",
        "task_queue": settings.task_queue,
        "temporal": settings.temporal_address,
        "namespace": settings.temporal_namespace,
        "model": "offline-scripted",
        "model_endpoint": model_server.base_url,
    }
    # A polling worker has published its tools, so clients can check a run's config first.
    assert await repo.known_tools(settings.task_queue) == set(default_registry().names)
    done = await stop(proc, signal.SIGTERM)
    assert done.code == 0, done.err
    assert [json.loads(x) for x in done.out.splitlines()] == [
        {"event": "stopped", "task_queue": settings.task_queue}
    ]
    assert "sk-never-printed" not in done.out + done.err


async def test_dev_json_prints_the_addresses_when_ready_and_a_line_on_stop(
    settings: Settings, tmp_path: Path
) -> None:
    proc = await spawn(stack_env(settings, tmp_path), "dev", "--json")
    ready = await json_line(proc)
    assert ready["event"] == "ready"
    assert ready["temporal"] == settings.temporal_address
    assert ready["web_ui"].startswith("http://") and ready["web_ui"].endswith(":8233")
    assert ready["postgresql"] == settings.database_url_display
    assert ready["task_queue"] == settings.task_queue and ready["worker"] == "in-process"
    # Both servers answered already: reused, not started.
    assert ready["started"] == {"temporal": False, "postgresql": False}
    # No model configured: the worker carries the offline model and says where it listens.
    assert ready["model"] == "offline-scripted"
    assert ready["model_endpoint"].startswith("http://127.0.0.1:")
    done = await stop(proc)
    assert done.code == 0, done.err
    assert [json.loads(x) for x in done.out.splitlines()] == [{"event": "stopped"}]


async def test_demo_json_is_json_lines_from_ready_to_stopped(
    settings: Settings, tmp_path: Path
) -> None:
    env = stack_env(settings, tmp_path)
    done = await agentrun(env, "demo", "--json", "--prompt", "what is 6*7?", timeout=180)
    assert done.code == 0, done.err
    lines = done.json_lines()  # every line of stdout is JSON
    assert lines[0]["event"] == "ready" and lines[0]["task_queue"] == settings.task_queue
    assert lines[-1] == {"event": "stopped"}
    summary = lines[-2]
    assert summary["status"] == "DONE" and summary["run_id"].startswith("run-")
    types = [line.get("type") for line in lines[1:-2]]
    assert EventType.TOOL_RESULT in types and EventType.MESSAGE_COMPLETED in types


# -- 12: what is wrong with the database, and its fix ----------------------------------------


def _url(settings: Settings, *, user: str | None = None, database: str | None = None) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(settings.libpq_url)
    netloc = f"{user or parts.username}@{parts.hostname}:{parts.port}"
    return parts._replace(netloc=netloc, path=f"/{database or parts.path.lstrip('/')}").geturl()


async def test_a_missing_database_is_not_an_unreachable_server(settings: Settings) -> None:
    name = f"nosuchdb_{uuid.uuid4().hex[:8]}"
    env = cli_env(settings, AGENTRUN_DATABASE_URL=_url(settings, database=name))
    for args in (("follow", "run-nope"), ("db", "current")):
        done = await agentrun(env, *args)
        line = one_line_error(done)
        assert done.code == 3, (args, done)
        assert f"no database {name!r}" in line and f"createdb {name}" in line, line
        assert "cannot reach" not in line and "start it with" not in line, line


async def test_a_refused_login_names_the_user_and_the_setting(settings: Settings) -> None:
    # The session's server trusts every local login, so an unknown role is the refusal it
    # can give; a wrong password is checked on the classifier below.
    env = cli_env(settings, AGENTRUN_DATABASE_URL=_url(settings, user="nobody_here"))
    done = await agentrun(env, "transcript", "run-nope")
    line = one_line_error(done)
    assert done.code == 3 and "refused to log in user 'nobody_here'" in line, line
    assert "AGENTRUN_DATABASE_URL" in line and "cannot reach" not in line


def test_the_classifier_reads_sqlstates_and_libpq_messages(settings: Settings) -> None:
    wrong_password = psycopg.OperationalError(
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '
        'password authentication failed for user "agentrun"'
    )
    line = str(database_error(wrong_password, settings))
    assert "refused to log in" in line
    assert "password authentication failed for user" in line and "connection to" not in line
    assert "refused to log in" in str(database_error(psycopg.errors.InvalidPassword(), settings))
    missing = psycopg.errors.InvalidCatalogName("nope")  # SQLSTATE 3D000
    assert "has no database" in str(database_error(missing, settings))
    refused = psycopg.OperationalError("connection failed: Connection refused")
    assert "cannot reach PostgreSQL" in str(database_error(refused, settings))


async def test_a_schema_behind_head_says_to_run_db_upgrade(settings: Settings) -> None:
    url = _url(settings, database=f"old_{uuid.uuid4().hex[:8]}")
    ensure_database(url)
    env = cli_env(settings, AGENTRUN_DATABASE_URL=url)
    done = await agentrun(env, "follow", "run-nope")
    line = one_line_error(done)
    assert done.code == 3 and "has no agentrun tables" in line and "`agentrun db upgrade`" in line
    upgrade(url.replace("postgresql://", "postgresql+psycopg://"), "0001")
    done = await agentrun(env, "status", "run-nope")
    line = one_line_error(done)
    assert "is at revision 0001" in line and "`agentrun db upgrade`" in line, line
    current = await agentrun(env, "db", "current")
    assert current.code == 0 and "run `agentrun db upgrade`" in current.out
    assert (await agentrun(env, "db", "upgrade")).code == 0
    done = await agentrun(env, "follow", "run-nope")
    assert done.code == 4 and "no run 'run-nope'" in done.err, done.err


# -- 13: model settings take effect in the worker --------------------------------------------


async def test_run_warns_when_its_shell_names_another_model_endpoint(
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"which endpoint {run_id}"
    model_server.script(prompt, [Reply(text="From the worker's model.")])
    elsewhere = f"http://127.0.0.1:{free_port()}/v1"
    env = cli_env(settings, OPENAI_BASE_URL=elsewhere, AGENTRUN_MODEL="gpt-elsewhere")
    done = await agentrun(env, "run", prompt, "--run-id", run_id, "--tools", "", "--json")
    assert done.code == 0, done.err
    assert done.json_lines()[-1]["status"] == "DONE"  # the warning stays off stdout
    warning = one_line_error(done)
    assert f"OPENAI_BASE_URL={elsewhere} in this shell is not what the run uses" in warning
    assert "model settings take effect in the worker" in warning
    assert f"offline-scripted at {model_server.base_url}" in warning
    queued = (await repo.read_events(run_id, 0, 1))[0]
    assert queued.data["model_endpoint"] == model_server.base_url

    same = cli_env(
        settings, OPENAI_BASE_URL=model_server.base_url, AGENTRUN_MODEL="offline-scripted"
    )
    prompt = f"same endpoint {run_id}"
    model_server.script(prompt, [Reply(text="Same.")])
    done = await agentrun(same, "run", prompt, "--tools", "", "--json")
    assert done.code == 0 and done.err.strip() == "", done.err


def test_a_different_model_name_is_named_and_an_older_worker_is_not_judged() -> None:
    shell = load_settings(openai_base_url="http://m/v1", model="big-model")
    queued = RunStatusData(status="QUEUED", model="small-model", model_endpoint="http://m/v1")
    warning = model_mismatch(shell, queued)
    assert warning is not None and "AGENTRUN_MODEL=big-model" in warning
    assert model_mismatch(shell, RunStatusData(status="QUEUED", model="small-model")) is None


def test_the_offline_answer_says_where_model_settings_go() -> None:
    reply = default_agent({"messages": [{"role": "user", "content": "hello"}]})
    assert "where the worker runs" in reply.text and "not in `agentrun run`" in reply.text


# -- 14: a real endpoint needs a model name ---------------------------------------------------


def test_an_endpoint_without_a_model_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTRUN_MODEL", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "https://user:pw-secret@llm.example/v1?key=k-secret")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith("invalid setting AGENTRUN_MODEL: required when OPENAI_BASE_URL")
    assert "https://user:***@llm.example/v1" in message
    assert "pw-secret" not in message and "k-secret" not in message
    monkeypatch.setenv("AGENTRUN_MODEL", "")  # docker-compose's ${AGENTRUN_MODEL:-}: unset
    with pytest.raises(SettingsError, match="AGENTRUN_MODEL: required"):
        load_settings()
    monkeypatch.setenv("AGENTRUN_MODEL", "gpt-4o-mini")
    assert load_settings().model == "gpt-4o-mini"
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.delenv("AGENTRUN_MODEL")
    assert load_settings().model == "offline-scripted"  # the offline model needs no name


async def test_the_cli_and_the_worker_refuse_an_endpoint_without_a_model() -> None:
    env = bare_env(OPENAI_BASE_URL="http://127.0.0.1:9/v1", COLUMNS="40")
    done = await agentrun(env, "ls")
    assert done.code == 2 and "AGENTRUN_MODEL: required" in one_line_error(done)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import worker; worker.main([])",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and "AGENTRUN_MODEL: required" in err.decode()


# -- 15: a model error names the endpoint (never the key) ------------------------------------


async def test_a_model_error_names_the_endpoint_and_not_the_key(
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"endpoint in the error {run_id}"
    model_server.script(prompt, [Fault("http", 404, "model 'nope' not found")])
    done = await agentrun(
        cli_env(settings), "run", prompt, "--run-id", run_id, "--tools", "", "--json"
    )
    assert done.code == 1
    errors = [e for e in done.json_lines() if e.get("type") == EventType.ERROR]
    assert errors, done.out
    expected = f"model endpoint at {model_server.base_url} answered HTTP 404"
    assert expected in errors[0]["data"]["message"]
    run = await repo.get_run(run_id)
    assert run.status == "FAILED" and expected in (run.error or "")
    assert "test-key" not in done.out + done.err + (run.error or "")


def test_a_connection_error_names_the_endpoint() -> None:
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    failure = classify(openai.APIConnectionError(request=request), "http://127.0.0.1:9/v1")
    assert failure.message.startswith("connection to the model endpoint at http://127.0.0.1:9/v1")
    assert failure.retryable


# -- 26: the offline model's speed, and a tool of your own -----------------------------------


async def test_the_worker_embedded_offline_model_takes_a_speed(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTRUN_OFFLINE_TOKENS_PER_SECOND", "25")
    assert load_settings().offline_tokens_per_second == 25
    made: list[OfflineModelServer] = []

    class Recorded(OfflineModelServer):
        def start(self) -> OfflineModelServer:
            made.append(self)
            return super().start()

    monkeypatch.setattr(worker_module, "OfflineModelServer", Recorded)
    offline = settings.model_copy(
        update={"openai_base_url": None, "offline_tokens_per_second": 25.0}
    )
    stopped = asyncio.Event()
    stopped.set()  # the worker stops as soon as it polls
    await worker_module.run_worker(offline, stopped, migrate=False)
    assert [m.tokens_per_second for m in made] == [25.0]


def test_save_note_appends_once_per_call(tmp_path: Path) -> None:
    ctx = ToolContext(run_id="run-1", tool_call_id="call-1", workspace=tmp_path)
    args = custom_tool.SaveNoteArgs(text="first")
    assert custom_tool.save_note(args, ctx) == "saved to notes.md"
    custom_tool.save_note(args, ctx)  # the same call run again (a lost worker)
    assert (tmp_path / "notes.md").read_text().count("first") == 1


async def test_the_custom_tool_example_runs_on_a_worker(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"save a note {run_id}"
    model_server.script(
        prompt,
        [
            Reply(tool_calls=[ToolCallSpec("save_note", {"text": "it works"}, id="call_n")]),
            Reply(text="Saved."),
        ],
    )
    w = build_worker(
        temporal_env.client,
        settings,
        repo,
        registry=custom_tool.registry(),
        graceful_shutdown=timedelta(seconds=1),
    )
    # What run_worker does when it starts: clients then know the worker's own tools.
    await repo.publish_tools(settings.task_queue, custom_tool.registry().names)
    async with w:
        done = await agentrun(
            cli_env(settings),
            "run",
            prompt,
            "--run-id",
            run_id,
            "--tools",
            "save_note",
            "--workspace",
            str(tmp_path),
            "--yes",
            "--json",
        )
    assert done.code == 0, done.err
    types = [e.get("type") for e in done.json_lines()]
    # NEEDS_APPROVAL: it asked first, and --yes answered.
    assert EventType.TOOL_APPROVAL_REQUESTED in types and EventType.TOOL_DECIDED in types
    result = next(e for e in done.json_lines() if e.get("type") == EventType.TOOL_RESULT)
    assert result["data"] == {
        "tool_call_id": "call_n",
        "name": "save_note",
        "is_error": False,
        "result": "saved to notes.md",
    }
    assert "- it works" in (tmp_path / "notes.md").read_text()
