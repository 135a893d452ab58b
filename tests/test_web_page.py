"""The web page in a real browser (headless Chromium from Debian, Selenium, Debian's
chromium-driver) against a real uvicorn server, the session's Temporal dev server and
PostgreSQL, a worker in this process and the offline model: the key prompt, a streamed answer
seen before the run ends, approval cards (approve, edit with a schema error then a valid edit,
reject with a reason, a decision made elsewhere), cancel, a stream cut mid-way, the inbox, and
the page at 375 px. Every test saves screenshots (tests/web_support.SHOTS)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.worker import Worker

from agentrun.protocol.statuses import RunStatus
from agentrun.store import Repository
from agentrun.testing.offline_model import Fault, OfflineModelServer, Reply
from tests.conftest import bash_call
from tests.http_support import Keys, bearer, start
from tests.web_support import Page, TcpProxy

pytest_plugins = ["tests.http_fixtures", "tests.web_support"]

RUN_STATUS = (
    "const s = document.querySelector('.run:last-of-type .status'); return s && s.textContent"
)
ANSWER = (
    "const t = document.querySelectorAll('.run .msg.assistant .text');"
    " return t.length ? t[t.length - 1].textContent : ''"
)


def card(tool_call_id: str) -> str:
    return f"article.card[data-tool-call-id='{tool_call_id}']"


async def shown(page: Page, css: str, what: str) -> str:
    """The text of the element `css` once it is there and not hidden (bounded wait)."""
    return str(
        await page.wait(
            "const n = document.querySelector(arguments[0]);"
            " return n && !n.hidden && n.textContent",
            css,
            what=what,
        )
    )


@pytest.fixture
async def page(chrome: Any, api: str, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    p = Page(chrome, api, request.node.name.removeprefix("test_")[:60])
    await p.resize(1400, 900)
    yield p
    await p.shot("end")


async def send(page: Page, prompt: str) -> None:
    await page.type("#message-input", prompt)
    await page.click("#send")


async def status_is(page: Page, status: str) -> None:
    await page.wait(f"{RUN_STATUS.removesuffix('s.textContent')} s.textContent === '{status}'",
                    what=f"run status {status}")  # fmt: skip


async def test_key_prompt_a_wrong_key_then_the_right_one(page: Page, keys: Keys) -> None:
    await page.open("/")
    await page.wait("return document.querySelector('#key-form')", what="the key prompt")
    await page.type("#key-input", "ar_notakey_000")
    await page.click("#key-form button[type=submit]")
    error = await shown(page, "#key-error", "the refused key's message")
    assert "refused" in error
    await page.shot("wrong-key")
    await page.type("#key-input", keys.full)
    await page.click("#key-form button[type=submit]")
    await page.wait("return document.querySelector('#new-chat')", what="the chats page")
    assert await page.js("return sessionStorage.getItem('agentrun.key')") == keys.full


async def test_the_demos_link_carries_the_key_in_its_fragment(page: Page, keys: Keys) -> None:
    await page.open(f"/#key={keys.full}")
    await page.wait("return document.querySelector('#new-chat')", what="the chats page")
    assert await page.js("return location.hash") == "#/"
    assert await page.js("return sessionStorage.getItem('agentrun.key')") == keys.full


async def test_a_revoked_key_sends_the_user_back_to_the_prompt(page: Page, keys: Keys) -> None:
    await page.open("/", key=keys.revoked)
    error = await shown(page, "#key-error", "the key prompt with a message")
    assert "revoked" in error


async def test_the_answer_streams_in_before_the_run_ends(
    page: Page, keys: Keys, worker: Worker, model_server: OfflineModelServer, run_id: str
) -> None:
    prompt = f"web stream {run_id}"
    text = " ".join(f"word{i}" for i in range(160))
    model_server.script(prompt, [Reply(text=text, chunk_chars=6, delay_s=0.02)])
    await page.open("/#/new", key=keys.full)
    await send(page, prompt)
    partial = await page.wait(
        f"const a = (() => {{ {ANSWER} }})(); const s = (() => {{ {RUN_STATUS} }})();"
        " return a && s && s !== 'DONE' && a",
        what="part of the answer while the run runs",
    )
    await page.shot("streaming")
    assert 0 < len(partial) < len(text) and text.startswith(partial)
    await status_is(page, RunStatus.DONE)
    assert await page.js(ANSWER) == text
    # The URL names the new session: a reload shows the same conversation from the record.
    assert "#/s/" in await page.js("return location.hash")
    # A marker the reload clears, so the waits below see the new page, not the old one.
    await page.js("window.beforeReload = true; location.reload()")
    await page.wait(
        f"return !window.beforeReload && (() => {{ {ANSWER} }})() === arguments[0]",
        text,
        what="the reloaded page",
    )
    # From the record now: the run's status and usage beside its answer.
    usage = await shown(page, ".run .run-meta .usage", "the run's usage")
    assert usage.endswith("out tokens") and not usage.startswith("0 in"), usage
    assert await page.text(".run .run-meta .status") == RunStatus.DONE


async def test_a_failed_attempts_partial_text_is_replaced_not_doubled(
    page: Page, keys: Keys, worker: Worker, model_server: OfflineModelServer, run_id: str
) -> None:
    prompt = f"web reset {run_id}"
    text = "The second attempt's answer, complete and said once."
    model_server.script(
        prompt,
        [Fault(kind="drop", after_chunks=4), Reply(text=text, chunk_chars=5, delay_s=0.01)],
    )
    await page.open("/#/new", key=keys.full)
    await send(page, prompt)
    await status_is(page, RunStatus.DONE)
    assert await page.js(ANSWER) == text


async def test_approve_then_the_tool_result_card(
    page: Page,
    keys: Keys,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"web approve {run_id}"
    model_server.script(prompt, [bash_call("echo web-approved", "call_w"), Reply(text="Ran it.")])
    session = await start_session(keys, page, prompt, tmp_path)
    await page.wait(f'return document.querySelector("{card("call_w")} .ask")', what="card")
    args = await page.text(f"{card('call_w')} pre.args")
    assert json.loads(args) == {"command": "echo web-approved"}
    await page.shot("approval-card")
    await page.click(f"{card('call_w')} button.approve")
    result = await shown(page, f"{card('call_w')} .result pre", "the result card")
    assert "web-approved" in result
    assert "approved by app" in await page.text(f"{card('call_w')} .decided")
    await status_is(page, RunStatus.DONE)
    assert session


async def start_session(keys: Keys, page: Page, prompt: str, workspace: Path) -> str:
    """A run started by the API in a new session (with a workspace), then its page opened."""
    async with httpx.AsyncClient(base_url=page.base_url) as http:
        started = await start(http, keys.full, prompt, config={"workspace": str(workspace)})
    await page.open(f"/#/s/{started['session_id']}", key=keys.full)
    return str(started["session_id"])


async def test_edit_with_a_schema_error_then_a_valid_edit(
    page: Page,
    keys: Keys,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"web edit {run_id}"
    model_server.script(prompt, [bash_call("echo original", "call_e"), Reply(text="Edited.")])
    await start_session(keys, page, prompt, tmp_path)
    await page.click(f"{card('call_e')} button.edit-open")
    await page.js(
        "document.querySelector(arguments[0]).value = arguments[1]",
        f"{card('call_e')} textarea.json",
        json.dumps({"cmd": "echo wrong-field"}),
    )
    await page.click(f"{card('call_e')} .edit button")
    error = await shown(page, f"{card('call_e')} .ask .error", "the schema error inline")
    await page.shot("schema-error")
    assert "schema" in error.lower() or "command" in error
    await page.js(
        "document.querySelector(arguments[0]).value = arguments[1]",
        f"{card('call_e')} textarea.json",
        json.dumps({"command": "echo edited-by-person"}),
    )
    await page.click(f"{card('call_e')} .edit button")
    result = await shown(page, f"{card('call_e')} .result pre", "the edited call's result")
    assert "edited-by-person" in result
    assert "approved with edits" in await page.text(f"{card('call_e')} .decided")


async def test_reject_with_a_reason(
    page: Page,
    keys: Keys,
    worker: Worker,
    model_server: OfflineModelServer,
    repo: Repository,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"web reject {run_id}"
    model_server.script(prompt, [bash_call("rm -rf /tmp/nothing", "call_r"), Reply(text="OK.")])
    await start_session(keys, page, prompt, tmp_path)
    await page.click(f"{card('call_r')} button.reject-open")
    await page.type(f"{card('call_r')} .reject input", "not on my watch")
    await page.click(f"{card('call_r')} .reject button")
    decided = await shown(page, f"{card('call_r')} .decided", "the rejection on the card")
    assert "rejected by app: not on my watch" in decided
    await status_is(page, RunStatus.DONE)


async def test_a_decision_made_elsewhere_updates_the_card(
    page: Page,
    keys: Keys,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"web elsewhere {run_id}"
    model_server.script(prompt, [bash_call("echo elsewhere", "call_x"), Reply(text="Fine.")])
    async with httpx.AsyncClient(base_url=page.base_url) as http:
        started = await start(http, keys.full, prompt, config={"workspace": str(tmp_path)})
        await page.open(f"/#/s/{started['session_id']}", key=keys.full)
        await page.wait(f'return document.querySelector("{card("call_x")} .ask")', what="card")
        view = (await http.get(f"/v1/runs/{started['run_id']}", headers=bearer(keys.full))).json()
        [pending] = view["pending"]
        r = await http.post(
            f"/v1/runs/{started['run_id']}/tool-calls/call_x/decision",
            json={"decision": "approve", "arguments_sha256": pending["arguments_sha256"]},
            headers=bearer(keys.full),
        )
        assert r.status_code == 200, r.text
    decided = await shown(page, f"{card('call_x')} .decided", "the other decision")
    assert "approved by app" in decided
    assert not await page.js(f'return document.querySelector("{card("call_x")} .ask")')


async def test_cancel_a_running_run(
    page: Page, keys: Keys, worker: Worker, model_server: OfflineModelServer, run_id: str
) -> None:
    prompt = f"web cancel {run_id}"
    model_server.script(prompt, [Reply(text="slow " * 400, chunk_chars=5, delay_s=0.05)])
    await page.open("/#/new", key=keys.full)
    await send(page, prompt)
    await page.wait(ANSWER, what="the answer starting")
    await page.click("#busy-cancel")
    await status_is(page, RunStatus.CANCELED)
    assert await page.js("return document.querySelector('#busy').hidden")


async def test_a_stream_cut_mid_way_resumes_without_loss_or_repeat(
    chrome: Any, api: str, keys: Keys, worker: Worker, model_server: OfflineModelServer,
    run_id: str,
) -> None:  # fmt: skip
    prompt = f"web cut {run_id}"
    text = " ".join(f"t{i}" for i in range(300))
    model_server.script(prompt, [Reply(text=text, chunk_chars=4, delay_s=0.02)])
    proxy = await TcpProxy(int(api.rsplit(":", 1)[1])).start()
    page = Page(chrome, f"http://127.0.0.1:{proxy.port}", "stream-cut")
    try:
        await page.open("/#/new", key=keys.full)
        await send(page, prompt)
        await page.wait(ANSWER, what="the answer starting")
        # The network drops: the stream fails, the page says it is reconnecting while the
        # server cannot be reached; then it resumes from the last seq it rendered.
        proxy.refusing = True
        proxy.cut()
        await page.wait("return !document.querySelector('#conn').hidden", what="reconnecting")
        await page.shot("reconnecting")
        cut_at = len(await page.js(ANSWER))
        proxy.refusing = False
        await status_is(page, RunStatus.DONE)
        assert 0 < cut_at < len(text)
        assert await page.js(ANSWER) == text
        assert await page.js("return document.querySelector('#conn').hidden")
    finally:
        await page.shot("end")
        await proxy.close()


async def test_the_inbox_lists_a_waiting_run_and_drops_it_when_decided(
    page: Page,
    keys: Keys,
    worker: Worker,
    model_server: OfflineModelServer,
    run_id: str,
    tmp_path: Path,
) -> None:
    prompt = f"web inbox {run_id}"
    model_server.script(prompt, [bash_call("echo inbox", "call_i"), Reply(text="Done.")])
    async with httpx.AsyncClient(base_url=page.base_url) as http:
        started = await start(http, keys.full, prompt, config={"workspace": str(tmp_path)})
        await page.open("/#/inbox", key=keys.full)
        await page.wait(f'return document.querySelector("{card("call_i")} .ask")', what="inbox")
        assert started["session_id"] in await page.text(card("call_i"))
        await page.shot("inbox")
        await page.click(f"{card('call_i')} button.approve")
        await page.wait(f'return !document.querySelector("{card("call_i")}")', what="removal")


async def test_readable_at_375_px(
    page: Page, keys: Keys, worker: Worker, model_server: OfflineModelServer, run_id: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    prompt = f"web narrow {run_id}"
    model_server.script(prompt, [bash_call("echo narrow", "call_n"), Reply(text="Narrow.")])
    await page.resize(375, 800)
    await start_session(keys, page, prompt, tmp_path)
    await page.wait(f'return document.querySelector("{card("call_n")} .ask")', what="card")
    width = await page.js("return document.documentElement.scrollWidth")
    inner = await page.js("return window.innerWidth")
    await page.shot("narrow")
    assert width <= inner, (width, inner)
    # Keyboard: the approve button takes focus and Enter decides.
    await page.js(f'document.querySelector("{card("call_n")} button.approve").focus()')
    from selenium.webdriver.common.keys import Keys as K

    active = await page._run(lambda: page.driver.switch_to.active_element)
    await page._run(active.send_keys, K.ENTER)
    await page.wait(
        f'const d = document.querySelector("{card("call_n")} .decided"); return d && !d.hidden',
        what="decided by keyboard",
    )
