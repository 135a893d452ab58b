"""The CLI as a person uses it at a terminal: `agentrun run` driven through a pseudo-terminal
(pexpect), answering its questions and pressing Ctrl-C, against the real stack (the session's
Temporal dev server and PostgreSQL, a worker in this process, the offline model). Assertions
are on what the terminal shows, the exit code, and the database."""

from __future__ import annotations

import asyncio
import io
import re
import sys
from pathlib import Path

import pexpect
from temporalio.worker import Worker

from agentrun.protocol.events import EventType
from agentrun.settings import Settings
from agentrun.store import Repository
from agentrun.testing.offline_model import Fault, OfflineModelServer, Reply, ToolCallSpec
from tests.conftest import bash_call, next_event
from tests.test_cli import agentrun, cli_env, spawn

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
# A question's last line: its text, its choices, any default, ": " (styles in between).
APPROVAL_PROMPT = r"\[a\]pprove[^\n]*\[a/e/r/l\][^\n]*?: "
INTERRUPT_QUESTION = r"Cancel the run, or detach[^\n]*\(detach\)[^\n]*?: "


class Terminal:
    """`agentrun ARGS` on a pseudo-terminal. Waits are bounded and run in a thread, so the
    worker in this test's event loop keeps going meanwhile."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.log = io.StringIO()
        self.child = pexpect.spawn(
            sys.executable,
            ["-c", "from starter.cli import main; main()", *args],
            env=env,
            encoding="utf-8",
            dimensions=(40, 200),
            timeout=60,
        )
        self.child.logfile_read = self.log

    async def expect(self, pattern: str, timeout: float = 60) -> None:
        await asyncio.to_thread(self.child.expect, pattern, timeout=timeout)

    async def shows(self, text: str, timeout: float = 60) -> None:
        """Wait until the terminal has shown `text`, whether or not an earlier expect went
        past it (everything read from the terminal is in the log)."""
        if text not in self.screen:
            await self.expect(re.escape(text), timeout)

    def type(self, line: str) -> None:
        self.child.sendline(line)

    def ctrl_c(self) -> None:
        self.child.sendintr()

    async def exit_code(self, timeout: float = 60) -> int:
        await asyncio.to_thread(self.child.expect, pexpect.EOF, timeout=timeout)
        self.child.close()
        return int(self.child.exitstatus if self.child.exitstatus is not None else -1)

    @property
    def screen(self) -> str:
        """All the terminal showed so far, without colours and cursor movements."""
        return ANSI.sub("", self.log.getvalue())

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


def _env(settings: Settings) -> dict[str, str]:
    return cli_env(settings, TERM="xterm")


async def test_continue_after_ctrl_c_keeps_following_to_the_end(
    settings: Settings,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"wait for a file {run_id}"
    # The tool runs until the test lets it finish: no clock decides what the follower sees.
    command = "while [ ! -e go ]; do sleep 0.1; done; echo finished-after-go"
    model_server.script(prompt, [bash_call(command, "call_go"), Reply(text="All done.")])
    term = Terminal(
        _env(settings), "run", prompt, "--run-id", run_id, "--yes", "--workspace", str(tmp_path)
    )
    try:
        await term.expect("approve by agentrun run --yes")
        term.ctrl_c()
        await term.expect(INTERRUPT_QUESTION)
        term.type("continue")
        (tmp_path / "go").touch()
        await term.expect("finished-after-go")
        await term.expect("DONE")
        assert await term.exit_code() == 0, term.screen
    finally:
        term.close()
    assert "detached" not in term.screen


async def test_a_refused_edit_says_why_and_asks_again(
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"edit me wrongly {run_id}"
    model_server.script(prompt, [bash_call("echo original", "call_edit"), Reply(text="Ok.")])
    term = Terminal(_env(settings), "run", prompt, "--run-id", run_id, "--workspace", str(tmp_path))
    try:
        await term.expect(APPROVAL_PROMPT)
        term.type("e")
        await term.expect(r"Arguments \(JSON\)")
        term.type('{"cmd": "ls"}')
        await term.expect("decision refused: ")
        await term.expect(APPROVAL_PROMPT, timeout=30)
        term.type("r")
        await term.expect("Reason")
        term.type("not like that")
        assert await term.exit_code() == 0, term.screen
    finally:
        term.close()
    call = await repo.get_tool_call(run_id, "call_edit")
    assert (call.decision, call.decision_reason) == ("reject", "not like that")


async def test_enter_approves_nothing_and_ctrl_c_at_the_prompt_asks_at_once(
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"risky {run_id}"
    model_server.script(prompt, [bash_call("echo risky-ran", "call_risky"), Reply(text="Ok.")])
    term = Terminal(_env(settings), "run", prompt, "--run-id", run_id, "--workspace", str(tmp_path))
    try:
        await term.expect(APPROVAL_PROMPT)
        term.type("")  # a bare Enter
        await term.expect("Please select one of the available options", timeout=30)
        await term.expect(APPROVAL_PROMPT, timeout=30)  # asked again
        assert (await repo.get_tool_call(run_id, "call_risky")).decision is None
        term.ctrl_c()
        await term.expect(INTERRUPT_QUESTION, timeout=30)  # at once, nothing answered first
        term.type("cancel")
        await term.expect("CANCELED")
        assert await term.exit_code() == 1, term.screen
    finally:
        term.close()
    assert "✓ bash" not in term.screen
    assert (await repo.get_run(run_id)).status == "CANCELED"
    assert (await repo.get_tool_call(run_id, "call_risky")).decision != "approve"


async def test_a_prompt_decided_elsewhere_says_by_whom_and_goes_on(
    settings: Settings,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"decided elsewhere {run_id}"
    model_server.script(prompt, [bash_call("echo elsewhere", "call_else"), Reply(text="Fine.")])
    env = _env(settings)
    term = Terminal(env, "run", prompt, "--run-id", run_id, "--workspace", str(tmp_path))
    try:
        await term.expect(APPROVAL_PROMPT)
        done = await agentrun(env, "approve", run_id, "call_else", "--by", "someone-else")
        assert done.code == 0, done.err
        await term.expect("already decided by someone-else", timeout=30)
        await term.expect("DONE")
        assert await term.exit_code() == 0, term.screen
    finally:
        term.close()
    assert "unexpected error" not in term.screen


async def test_a_prompt_whose_run_ended_says_so_and_exits_cleanly(
    settings: Settings,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"ended under the prompt {run_id}"
    model_server.script(prompt, [bash_call("echo never", "call_end"), Reply(text="No.")])
    env = _env(settings)
    term = Terminal(env, "run", prompt, "--run-id", run_id, "--workspace", str(tmp_path))
    try:
        await term.expect(APPROVAL_PROMPT)
        done = await agentrun(env, "cancel", run_id, "--reason", "from elsewhere")
        assert done.code == 0, done.err
        await term.expect("the run ended CANCELED", timeout=30)
        code = await term.exit_code()
    finally:
        term.close()
    assert code == 1, term.screen
    assert "unexpected error" not in term.screen and "Traceback" not in term.screen


async def test_detaching_prints_no_made_up_totals(
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"detach from me {run_id}"
    model_server.script(prompt, [bash_call("echo later", "call_detach"), Reply(text="Ok.")])
    env = _env(settings)
    term = Terminal(
        env, "run", prompt, "--run-id", run_id, "--no-input", "--workspace", str(tmp_path)
    )
    try:
        await term.expect("waiting for approval")
        term.ctrl_c()
        await term.expect("detached; the run goes on")
        await term.exit_code()
    finally:
        term.close()
    assert "tokens ·" not in term.screen and "model calls" not in term.screen
    await agentrun(env, "cancel", run_id)


async def test_a_run_cancelled_mid_stream_prints_no_made_up_totals(
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    env = _env(settings)
    streaming = run_id
    prompt = f"cancel mid-stream {streaming}"
    model_server.script(prompt, [Reply(text="slow " * 500, delay_s=0.02)])
    follower = await spawn(env, "run", prompt, "--run-id", streaming, "--tools", "")
    await next_event(repo, streaming, EventType.MESSAGE_DELTA)
    assert (await agentrun(env, "cancel", streaming)).code == 0
    out, _ = await asyncio.wait_for(follower.communicate(), 60)
    assert "CANCELED" in out.decode()
    assert "0 model calls" not in out.decode(), out.decode()


async def test_events_are_shown_in_the_order_of_the_log(
    settings: Settings,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"in order {run_id}"
    model_server.script(prompt, [bash_call("echo ordered", "call_order"), Reply(text="Ok.")])
    env = _env(settings)
    done = await agentrun(
        env, "run", prompt, "--run-id", run_id, "--yes", "--workspace", str(tmp_path)
    )
    assert done.code == 0, done.err
    lines = [x for x in done.out.splitlines() if x.strip()]
    asked = next(i for i, x in enumerate(lines) if "approval needed for bash" in x)
    assert "waiting for approval" in lines[asked + 1], lines
    assert "approve by agentrun run --yes" in lines[asked + 2], lines


async def test_a_result_that_needed_no_approval_shows_while_a_question_is_open(
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    env = _env(settings)
    both = run_id
    prompt = f"two calls {both}"
    calls = [
        ToolCallSpec("calculator", {"expression": "6*7"}, id="call_calc"),
        ToolCallSpec("bash", {"command": "echo asked"}, id="call_asked"),
    ]
    model_server.script(prompt, [Reply(tool_calls=calls), Reply(text="Both done.")])
    term = Terminal(env, "run", prompt, "--run-id", both, "--workspace", str(tmp_path))
    try:
        await term.expect(APPROVAL_PROMPT)
        await term.shows("✓ calculator: 42", timeout=30)
        assert (await repo.get_tool_call(both, "call_asked")).decision is None  # still asked
        term.type("a")
        await term.expect("DONE")
        assert await term.exit_code() == 0, term.screen
    finally:
        term.close()


async def test_a_failed_attempt_that_showed_no_text_takes_nothing_back(
    settings: Settings,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
) -> None:
    prompt = f"fail first {run_id}"
    model_server.script(
        prompt, [Fault("http", 503, "upstream unavailable"), Reply(text="Second try.")]
    )
    done = await agentrun(cli_env(settings), "run", prompt, "--run-id", run_id, "--tools", "")
    assert done.code == 0, done.err
    assert "upstream unavailable" in done.out and "Second try." in done.out
    assert "partial text above is dropped" not in done.out, done.out
